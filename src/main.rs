//! The `cashless` binary: everything lives in the library; see `cashless::cli`.

fn main() -> std::process::ExitCode {
    cashless::cli::main()
}
