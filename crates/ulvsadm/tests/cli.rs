//! The clap definition: it is the parser's option table (same options, both ways), it renders
//! the help, the completions and the man page, and `deploy/man/ulvsadm.8` is its current
//! rendering (`ULVSADM_WRITE_MAN=1 cargo test -p ulvsadm --test cli` rewrites it).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use ulvsadm::cli;

#[test]
fn the_clap_command_is_consistent() {
    cli::command().debug_assert();
}

#[test]
fn option_table_matches_clap() {
    if let Err(e) = ulvsadm::parse::option_table_check() {
        panic!("{e}");
    }
}

/// The long names of the options ulvsadm implements (clap's visible arguments).
fn documented_longs() -> Vec<String> {
    let mut cmd = cli::command();
    cmd.build();
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

#[test]
fn help_man_and_completions_name_every_documented_option() {
    let help = ulvsadm::help::usage();
    let man = cli::man_page();
    let bash = cli::completions(clap_complete::Shell::Bash);
    let zsh = cli::completions(clap_complete::Shell::Zsh);
    let fish = cli::completions(clap_complete::Shell::Fish);
    let longs = documented_longs();
    assert!(longs.len() > 40, "{longs:?}");
    for long in &longs {
        let flag = format!("--{long}");
        assert!(help.contains(&flag), "--help lacks {flag}");
        assert!(
            man.contains(&flag.replace('-', "\\-")),
            "man page lacks {flag}"
        );
        assert!(bash.contains(&flag), "bash completions lack {flag}");
        assert!(zsh.contains(&flag), "zsh completions lack {flag}");
        assert!(
            fish.contains(&format!("-l {long}")),
            "fish completions lack {flag}"
        );
    }
    // Unsupported ipvsadm options are recognised but not advertised.
    for hidden in ["start-daemon", "mcast-interface", "syncid"] {
        for (what, text) in [
            ("help", &help),
            ("man", &man),
            ("bash", &bash),
            ("fish", &fish),
        ] {
            assert!(!text.contains(hidden), "{what} shows {hidden}");
        }
    }
}

fn man_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/man/ulvsadm.8")
}

#[test]
fn checked_in_man_page_is_current() -> Result<()> {
    let want = cli::man_page();
    let path = man_path();
    if std::env::var_os("ULVSADM_WRITE_MAN").is_some() {
        std::fs::write(&path, &want).with_context(|| format!("write {}", path.display()))?;
    }
    let have =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        have == want,
        "{} is stale: run `ULVSADM_WRITE_MAN=1 cargo test -p ulvsadm --test cli`",
        path.display()
    );
    Ok(())
}

fn run(args: &[&str]) -> Result<std::process::Output> {
    Command::new(env!("CARGO_BIN_EXE_ulvsadm"))
        .args(args)
        .env_remove("ULVS_SOCKET")
        .output()
        .with_context(|| format!("run ulvsadm {args:?}"))
}

#[test]
fn the_binary_prints_man_page_and_completions() -> Result<()> {
    let man = run(&["--man"])?;
    ensure!(man.status.success(), "{man:?}");
    ensure!(String::from_utf8(man.stdout)? == cli::man_page());

    let bash = run(&["--completions", "bash"])?;
    ensure!(bash.status.success(), "{bash:?}");
    // The script is valid bash, when bash is there to check it.
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("ulvsadm.bash");
    std::fs::write(&script, &bash.stdout)?;
    if let Ok(check) = Command::new("bash").arg("-n").arg(&script).output() {
        ensure!(
            check.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }

    let bad = run(&["--completions", "tcsh"])?;
    ensure!(bad.status.code() == Some(2), "{bad:?}");
    ensure!(
        String::from_utf8(bad.stderr)?
            == "ulvsadm: unknown shell `tcsh' for --completions (bash, zsh, fish, elvish or \
                powershell)\n"
    );
    Ok(())
}
