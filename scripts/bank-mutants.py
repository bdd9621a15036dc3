#!/usr/bin/env python3
"""Hand-made mutants of the bank's decisions (examples/bank/app.rs), run against the
bank's `decisions` unit tests. cargo-mutants mutates only library and binary targets, and
the bank is an example whose app.rs is a module of the example and of tests/bank.rs, so
these mutants are listed here in cargo-mutants' manner: a condition negated, a boundary
moved, an operator swapped, a check deleted, a body replaced by its default.

Run from the repository root (./scripts/mutants runs it); it edits app.rs one mutant at a
time and always restores it. Prints each mutant as caught or MISSED and a summary; exits
non-zero when one is missed.
"""
import pathlib
import subprocess
import sys

APP = pathlib.Path("examples/bank/app.rs")

# (what, text to find, its occurrence (1-based), replacement)
MUTANTS = [
    ("usable: an unopened account is usable", "if !self.open {", 1, "if self.open {"),
    ("usable: a closed account is usable", "if self.closed {", 1, "if !self.closed {"),
    ("open: an open account opens again", "        if self.open {\n            return Err(Error::already_exists(", 1,
     "        if !self.open {\n            return Err(Error::already_exists("),
    ("open: an empty owner is accepted", "!owner.trim().is_empty(),", 1, "owner.trim().is_empty(),"),
    ("open: an overdraft of 0 is refused", "overdraft_limit >= 0,", 1, "overdraft_limit > 0,"),
    ("open: a negative overdraft is accepted", "overdraft_limit >= 0,", 1, "overdraft_limit < 0,"),
    ("positive: 0 is positive", "amount > 0,", 1, "amount >= 0,"),
    ("positive: always Ok", "    v.finish()\n}", 1, "    let _ = v;\n    Ok(())\n}"),
    ("deposit: a closed account takes deposits", "    positive(amount)?;\n        self.usable()?;\n        Ok(vec![AccountEvent::Deposited", 1,
     "    positive(amount)?;\n        Ok(vec![AccountEvent::Deposited"),
    ("can_pay: the overdraft limit itself refused", "if self.balance - amount < -self.overdraft_limit {", 1,
     "if self.balance - amount <= -self.overdraft_limit {"),
    ("can_pay: one past the limit allowed", "if self.balance - amount < -self.overdraft_limit {", 1,
     "if self.balance - amount < -self.overdraft_limit - 1 {"),
    ("can_pay: the amount added", "if self.balance - amount < -self.overdraft_limit {", 1,
     "if self.balance + amount < -self.overdraft_limit {"),
    ("can_pay: always Ok", "    fn can_pay(&self, amount: i64) -> Result<(), Error> {\n", 1,
     "    fn can_pay(&self, amount: i64) -> Result<(), Error> {\n        if amount != i64::MIN { return Ok(()); }\n"),
    ("withdraw: no overdraft rule", "        self.can_pay(amount)?;\n        Ok(vec![AccountEvent::Withdrawn", 1,
     "        Ok(vec![AccountEvent::Withdrawn"),
    ("withdraw: no positive check", "    pub fn withdraw(&self, amount: i64) -> Result<Vec<AccountEvent>, Error> {\n        positive(amount)?;\n", 1,
     "    pub fn withdraw(&self, amount: i64) -> Result<Vec<AccountEvent>, Error> {\n"),
    ("send: no overdraft rule", "        self.can_pay(amount)?;\n        Ok(vec![AccountEvent::TransferSent", 1,
     "        Ok(vec![AccountEvent::TransferSent"),
    ("send: a closed account sends", "    positive(amount)?;\n        self.usable()?;\n        self.can_pay(amount)?;\n        Ok(vec![AccountEvent::TransferSent", 1,
     "    positive(amount)?;\n        self.can_pay(amount)?;\n        Ok(vec![AccountEvent::TransferSent"),
    ("receive: a settled transfer received again", "if self.settled.contains(&transfer) {", 1, "if !self.settled.contains(&transfer) {"),
    ("receive: a closed account receives", "            return Ok(Vec::new());\n        }\n        self.usable()?;\n", 1,
     "            return Ok(Vec::new());\n        }\n"),
    ("refund: a settled transfer refunded again", "if self.settled.contains(&transfer) {", 2, "if !self.settled.contains(&transfer) {"),
    ("close: a non-zero balance closes", "if self.balance != 0 {", 1, "if self.balance == 0 {"),
    ("close: a closed account closes again", "    pub fn close(&self) -> Result<Vec<AccountEvent>, Error> {\n        self.usable()?;\n", 1,
     "    pub fn close(&self) -> Result<Vec<AccountEvent>, Error> {\n"),
]


def replace_nth(text: str, old: str, n: int, new: str) -> str:
    start = -1
    for _ in range(n):
        start = text.find(old, start + 1)
        if start < 0:
            raise SystemExit(f"mutant text not found (occurrence {n}): {old!r}")
    return text[:start] + new + text[start + len(old):]


def main() -> int:
    original = APP.read_text()
    missed = []
    try:
        for what, old, n, new in MUTANTS:
            APP.write_text(replace_nth(original, old, n, new))
            run = subprocess.run(
                ["cargo", "test", "--quiet", "--test", "bank", "decisions"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            caught = run.returncode != 0
            print(f"{'caught' if caught else 'MISSED'}  {what}", flush=True)
            if not caught:
                missed.append(what)
    finally:
        APP.write_text(original)
    print(f"bank decisions: {len(MUTANTS) - len(missed)} caught, {len(missed)} missed of {len(MUTANTS)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
