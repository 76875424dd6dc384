//! Completions and the manual page, generated from the clap definitions: bash really completes
//! with the script (`harvest har` → `harvest`, `harvest harvest --` → its flags), every shell's
//! script names the subcommands, and the man pages render without a roff warning.

use std::process::Command;

use crate::common::*;

/// Source the bash script, then complete `$1` as bash would on TAB (the function the script
/// registers for `harvest`, with COMP_WORDS/COMP_CWORD set), printing one candidate per line.
const COMPLETE: &str = r#"
source <("$HARVEST" completions bash) || exit 3
spec=$(complete -p harvest) || exit 4
fn=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<< "$spec")
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
"$fn" harvest "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;

fn complete(line: &str) -> Vec<String> {
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", COMPLETE, "complete", line])
        .env("HARVEST", env!("CARGO_BIN_EXE_harvest"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bash completion of {line:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    assert_eq!(complete("harvest har"), ["harvest"]);
    let subcommands = complete("harvest ");
    for sub in [
        "harvest",
        "incremental",
        "sql-extract",
        "verify",
        "history",
        "export",
        "config",
        "completions",
        "man",
    ] {
        assert!(
            subcommands.iter().any(|s| s == sub),
            "{sub}: {subcommands:?}"
        );
    }
    let flags = complete("harvest harvest --");
    for flag in [
        "--config",
        "--out",
        "--table",
        "--shard",
        "--writer",
        "--jobs",
        "--restart",
    ] {
        assert!(flags.iter().any(|f| f == flag), "{flag}: {flags:?}");
    }
    assert!(flags.iter().all(|f| f.starts_with("--")), "{flags:?}");
    assert_eq!(complete("harvest verify --jso"), ["--json"]);
    let shells = complete("harvest completions ");
    for sh in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.iter().any(|s| s == sh), "{sh}: {shells:?}");
    }
}

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef harvest"),
        ("fish", "complete -c harvest"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let o = harvest(&["completions", shell], &[]);
        assert_exit(&o, 0);
        let script = String::from_utf8(o.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for sub in ["sql-extract", "incremental", "history"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
    let o = harvest(&["completions", "tcsh"], &[]);
    assert_exit(&o, 2);
}

#[test]
fn man_pages_render_for_the_command_and_each_subcommand() {
    let o = harvest(&["man"], &[]);
    assert_exit(&o, 0);
    let page = String::from_utf8(o.stdout).unwrap();
    assert!(page.contains(".TH harvest 1"), "{page}");
    for sub in [
        "harvest\\-harvest(1)",
        "harvest\\-sql\\-extract(1)",
        "harvest\\-verify(1)",
    ] {
        assert!(
            page.contains(sub),
            "no {sub} in SEE ALSO/subcommands:\n{page}"
        );
    }

    let d = TempDir::new("man");
    let dir = d.path().join("man1");
    let o = harvest(&["man", "--out-dir", dir.to_str().unwrap()], &[]);
    assert_exit(&o, 0);
    for name in [
        "harvest.1",
        "harvest-harvest.1",
        "harvest-incremental.1",
        "harvest-sql-extract.1",
        "harvest-verify.1",
        "harvest-history.1",
        "harvest-export.1",
        "harvest-config-schema.1",
    ] {
        let path = dir.join(name);
        assert!(path.exists(), "{name} not written: {}", stderr(&o));
        // groff (man-db's formatter) renders it with warnings on: none may appear.
        let r = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(
            r.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        // grotty emboldens by overstriking (`N\x08N`): a backspace takes back the char before it.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&r.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{name}:\n{text}"
        );
    }
    let harvest_page = std::fs::read_to_string(dir.join("harvest-harvest.1")).unwrap();
    assert!(
        harvest_page.contains("\\-\\-shard"),
        "harvest-harvest.1 lacks --shard"
    );
}
