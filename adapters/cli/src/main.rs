//! `flext`: inspect and operate a flext store on SQLite or PostgreSQL from a terminal.

fn main() -> std::process::ExitCode {
    flext_cli::main_with(std::env::args_os(), None)
}
