"""flext bridge interop, the Python side.

Decodes every v1 golden file with the `msgpack` and `protobuf` packages from PyPI, checks
each field against expected.json, re-encodes what it decoded, and writes the bytes to the
output directory for the Rust side to decode. The Protobuf classes are built from the
committed descriptor set (bridge.fds): no protoc needed.

usage: python interop.py GOLDEN_DIR OUT_DIR
"""

import json
import sys
from pathlib import Path

import msgpack
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

golden, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
expected = json.loads((golden / "expected.json").read_text())

fds = descriptor_pb2.FileDescriptorSet.FromString((golden / "bridge.fds").read_bytes())
pool = descriptor_pool.DescriptorPool()
for f in fds.file:
    pool.Add(f)
Envelope = message_factory.GetMessageClass(pool.FindMessageTypeByName("flext.bridge.v1.Envelope"))


def tag_plain(v):
    """A value decoded by msgpack, with its type spelled out."""
    if v is None:
        return {"null": True}
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, float):
        return {"float": v}
    if isinstance(v, str):
        return {"string": v}
    if isinstance(v, bytes):
        return {"bytes_hex": v.hex()}
    if isinstance(v, list):
        return {"list": [tag_plain(x) for x in v]}
    if isinstance(v, dict):
        return {"map": {k: tag_plain(x) for k, x in v.items()}}
    raise TypeError(f"unexpected {type(v)}")


def view_msgpack(d):
    out = {
        "contract_major": d["contract_major"],
        "contract_minor": d["contract_minor"],
        "metadata": d.get("metadata", {}),
    }
    if "ok" in d:
        ok = d["ok"]
        if "bytes" in ok:
            out["ok"] = {"bytes": {"encoding": ok["bytes"]["encoding"], "data_hex": ok["bytes"]["data"].hex()}}
        else:
            out["ok"] = {"value": tag_plain(ok.get("value"))}
    else:
        e = d["error"]
        out["error"] = {
            "code": e["code"],
            "message": e.get("message", ""),
            "reason": e.get("reason", ""),
            "domain": e.get("domain", ""),
            "details": {k: tag_plain(v) for k, v in e.get("details", {}).items()},
            "field_violations": [
                {"field": v["field"], "code": v["code"], "reason": v["reason"], "description": v["description"]}
                for v in e.get("field_violations", [])
            ],
            "correlation_id": e.get("correlation_id", ""),
        }
    return out


def tag_pb(v):
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null":
        return {"null": True}
    if kind in ("int", "uint"):
        return {"int": str(getattr(v, kind))}
    if kind == "bytes":
        return {"bytes_hex": v.bytes.hex()}
    if kind == "list":
        return {"list": [tag_pb(x) for x in v.list.items]}
    if kind == "map":
        return {"map": {k: tag_pb(v.map.entries[k]) for k in v.map.entries}}
    return {kind: getattr(v, kind)}


def view_pb(m):
    out = {
        "contract_major": m.contract_major,
        "contract_minor": m.contract_minor,
        "metadata": dict(m.metadata),
    }
    if m.WhichOneof("outcome") == "ok":
        body = m.ok.WhichOneof("body")
        if body == "bytes":
            out["ok"] = {"bytes": {"encoding": m.ok.bytes.encoding, "data_hex": m.ok.bytes.data.hex()}}
        else:
            out["ok"] = {"value": tag_pb(m.ok.value)}
    else:
        e = m.error
        out["error"] = {
            "code": e.code,
            "message": e.message,
            "reason": e.reason,
            "domain": e.domain,
            "details": {k: tag_pb(e.details[k]) for k in e.details},
            "field_violations": [
                {"field": v.field, "code": v.code, "reason": v.reason, "description": v.description}
                for v in e.field_violations
            ],
            "correlation_id": e.correlation_id,
        }
    return out


def same(a, b, path="$"):
    """Compares two views, naming the first difference."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            raise AssertionError(f"{path}: keys {sorted(a)} != {sorted(b)}")
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise AssertionError(f"{path}: {len(a)} items != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        raise AssertionError(f"{path}: {a!r} != {b!r}")


checked = 0
for name, want in expected.items():
    raw = (golden / f"{name}.msgpack").read_bytes()
    decoded = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    same(view_msgpack(decoded), want, f"{name}.msgpack")
    (out / f"{name}.msgpack").write_bytes(msgpack.packb(decoded, use_bin_type=True))

    m = Envelope.FromString((golden / f"{name}.pb").read_bytes())
    same(view_pb(m), want, f"{name}.pb")
    (out / f"{name}.pb").write_bytes(m.SerializeToString(deterministic=True))
    checked += 2

print(f"python: {checked} golden files decoded and checked field by field, re-encoded to {out}")
