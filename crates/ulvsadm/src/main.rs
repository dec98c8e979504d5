//! ipvsadm-compatible command-line client for ulvsd (see the library for the behaviour).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("ulvsadm: argument is not valid UTF-8: {bad:?}");
            return ExitCode::from(2);
        }
    };
    ExitCode::from(ulvsadm::run(&args))
}
