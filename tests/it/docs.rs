//! Docs that cannot rot: every TOML example in `README.md`, `docs/*.md` and `examples/` (and
//! `harvest.example.toml`) parses with the real config types, where unknown keys are errors,
//! and every `harvest …` command line in a ```sh (or ```cron) block parses with the real CLI
//! (argument parsing only: nothing runs). A renamed key or flag fails here instead of
//! misleading a reader.
//!
//! A TOML block is checked as what it shows: a whole file (it has `[[source]]`, another
//! section or a top-level key such as `out`), tables of a source (it starts with
//! `[[source.table]]`: a source is put around them), or keys shown one paragraph at a time
//! (each paragraph must parse as the keys of a table, of a source, or of the file).

use std::path::{Path, PathBuf};

use clap::Parser as _;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(language, first line number, text)` of every fenced block in a Markdown file.
fn fenced_blocks(text: &str) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match open.take() {
            None => {
                if let Some(lang) = line.strip_prefix("```") {
                    open = Some((lang.trim().to_string(), n + 2, String::new()));
                }
            }
            Some((lang, start, mut body)) => {
                if line.starts_with("```") {
                    out.push((lang, start, body));
                } else {
                    body.push_str(line);
                    body.push('\n');
                    open = Some((lang, start, body));
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed ``` block");
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 10, "docs/ holds the reference pages");
    files.extend(docs);
    files
}

fn parse_config(text: &str) -> Result<(), String> {
    toml::from_str::<harvest::config::ConfigFile>(text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

const SOURCE: &str = "[[source]]\nname = \"docs\"\nurl = \"http://127.0.0.1:1\"\n";

fn first_key_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Check one TOML example as what it shows (see the module header).
fn check_toml(text: &str) -> Result<(), String> {
    let first = first_key_line(text).unwrap_or("");
    let whole = text.lines().any(|l| {
        let l = l.trim_start();
        (l.starts_with('[') && !l.starts_with("[[source.table]]")) || l.starts_with("out ")
    });
    if whole {
        return parse_config(text);
    }
    if first.starts_with("[[source.table]]") {
        return parse_config(&format!("{SOURCE}{text}"));
    }
    let mut paragraph = String::new();
    let mut paragraphs = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if first_key_line(&paragraph).is_some() {
                paragraphs.push(std::mem::take(&mut paragraph));
            }
            paragraph.clear();
        } else {
            paragraph.push_str(line);
            paragraph.push('\n');
        }
    }
    for p in paragraphs {
        let as_table = format!("{SOURCE}[[source.table]]\nname = \"t\"\n{p}");
        let as_source = format!("{SOURCE}{p}");
        let results = [
            parse_config(&as_table),
            parse_config(&as_source),
            parse_config(&p),
        ];
        if !results.iter().any(Result::is_ok) {
            let why: Vec<String> = results.into_iter().filter_map(Result::err).collect();
            return Err(format!("paragraph\n{p}fits no place: {}", why.join(" / ")));
        }
    }
    Ok(())
}

/// Shell words of a block: quotes (across lines), backslash line continuations and `#`
/// comments handled; `|`, `&&`, `||`, `;` and newlines end a command.
fn shell_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars().peekable();
    let end_word = |word: &mut Option<String>, words: &mut Vec<String>| {
        if let Some(w) = word.take() {
            words.push(w);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(q) = chars.next() {
                    if q == c {
                        break;
                    }
                    if q == '\\' && c == '"' {
                        if let Some(n) = chars.next() {
                            w.push(n);
                        }
                        continue;
                    }
                    w.push(q);
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(n) => word.get_or_insert_with(String::new).push(n),
            },
            '#' if word.is_none() => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                end_word(&mut word, &mut words);
                commands.push(std::mem::take(&mut words));
            }
            '\n' | ';' | '|' | '&' => {
                end_word(&mut word, &mut words);
                commands.push(std::mem::take(&mut words));
            }
            c if c.is_whitespace() => end_word(&mut word, &mut words),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut words);
    commands.push(words);
    commands.retain(|c| !c.is_empty());
    commands
}

/// The `harvest` command lines of a block, as argument vectors (redirections dropped).
fn harvest_invocations(lang: &str, text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for mut words in shell_commands(text) {
        if lang == "cron" {
            words.drain(..words.len().min(5));
        }
        while words.first().is_some_and(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
            })
        }) {
            words.remove(0);
        }
        let Some(first) = words.first() else { continue };
        if first != "harvest" && !first.ends_with("/harvest") {
            continue;
        }
        let mut args = Vec::new();
        let mut skip_next = false;
        for w in words {
            if skip_next {
                skip_next = false;
                continue;
            }
            let redirect = w.trim_start_matches(|c: char| c.is_ascii_digit());
            if redirect.starts_with('>') || redirect.starts_with('<') {
                skip_next = redirect.trim_start_matches(['>', '<', '&']).is_empty();
                continue;
            }
            args.push(w);
        }
        out.push(args);
    }
    out
}

fn check_command(args: &[String]) -> Result<(), String> {
    match harvest::cli::Cli::try_parse_from(args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn every_toml_example_and_harvest_command_in_the_docs_parses() {
    let mut problems = Vec::new();
    let (mut tomls, mut commands) = (0, 0);
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (lang, line, body) in fenced_blocks(&text) {
            match lang.as_str() {
                "toml" => {
                    tomls += 1;
                    if let Err(e) = check_toml(&body) {
                        problems.push(format!("{}:{line}: TOML example: {e}", rel(&file)));
                    }
                }
                "sh" | "cron" => {
                    for args in harvest_invocations(&lang, &body) {
                        commands += 1;
                        if let Err(e) = check_command(&args) {
                            problems.push(format!(
                                "{}:{line}: `{}`: {e}",
                                rel(&file),
                                args.join(" ")
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut configs: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.push(root().join("harvest.example.toml"));
    for file in &configs {
        tomls += 1;
        if let Err(e) = parse_config(&std::fs::read_to_string(file).unwrap()) {
            problems.push(format!("{}: {e}", rel(file)));
        }
    }
    assert!(
        problems.is_empty(),
        "{} example(s) no longer parse:\n{}",
        problems.len(),
        problems.join("\n\n")
    );
    // The docs hold dozens of each: a count this low means the extraction broke, not the docs.
    assert!(tomls >= 10, "only {tomls} TOML examples found");
    assert!(
        commands >= 40,
        "only {commands} harvest command lines found"
    );
}

#[test]
fn the_docs_check_catches_a_renamed_key_and_a_renamed_flag() {
    assert!(check_toml("[[source.table]]\nname = \"t\"\npage_sise = 10\n").is_err());
    assert!(check_toml("paginate = \"link\"\n\nrecords_pointer = \"/data\"\n").is_err());
    assert!(check_toml("[[source.table]]\nname = \"t\"\npage_size = 10\n").is_ok());
    let cmds = harvest_invocations(
        "sh",
        "X=1 harvest verify --out d --quik   # comment\nharvest export --out 'a b' \\\n  --dataset t --format csv > f.csv\n",
    );
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert!(check_command(&cmds[0]).is_err());
    assert_eq!(cmds[1][3], "a b");
    check_command(&cmds[1]).unwrap();
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.push(anchor_of(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !linked.exists() {
                problems.push(format!("{}: {target}: no such file", rel(&file)));
                continue;
            }
            if !anchor.is_empty() {
                let text = std::fs::read_to_string(&linked).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    problems.push(format!("{}: {target}: no such heading", rel(&file)));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
    assert!(checked >= 30, "only {checked} relative links found");
}
