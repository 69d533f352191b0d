//! The `tahoe-mount` binary: parses the command line and hands off to the library through `cli`.

fn main() -> std::process::ExitCode {
    tahoe_mount::cli::run()
}
