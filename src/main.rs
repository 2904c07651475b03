//! The `scopegate` binary: parse the command line, dispatch to the library.

fn main() -> std::process::ExitCode {
    scopegate::cli::main()
}
