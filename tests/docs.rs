//! The documentation a clone carries is whole: every relative link in the README and the pages
//! under `docs/` names a file of the repository (never one outside it), and every `#anchor`
//! names a heading of its page. (The TOML examples of the same pages are loaded as
//! configurations by `config::tests`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pages checked: the README, and every Markdown page under `docs/` and at the top.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = ["README.md", "BENCHMARKS.md", "CHANGELOG.md", "FUZZING.md"].iter().map(|p| root().join(p)).collect();
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of the inline links `[text](target)` outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Drop code spans: a link's brackets inside backticks are not a link.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_stays_in_the_repository_and_resolves() {
    let root = root().canonicalize().unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(&root).unwrap_or(&page).display().to_string();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
            let resolved = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            let Ok(resolved) = resolved.canonicalize() else {
                problems.push(format!("{name}: {target}: no such file"));
                continue;
            };
            if !resolved.starts_with(&root) {
                problems.push(format!("{name}: {target}: leaves the repository"));
                continue;
            }
            if let Some(anchor) = anchor
                && resolved.extension().is_some_and(|e| e == "md")
            {
                let text = std::fs::read_to_string(&resolved).unwrap();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    problems.push(format!("{name}: {target}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
    assert!(checked > 20, "only {checked} links found");
}

#[test]
fn nothing_points_outside_the_clone() {
    // The wire contract is the project's own `docs/protocol.md`; no project file names a path
    // beside the repository.
    let mut offenders = Vec::new();
    let mut stack = vec![root().join("src"), root().join("docs"), root().join("examples"), root().join("deploy")];
    let mut files: Vec<PathBuf> = ["README.md", "callpipe.toml", "Cargo.toml"].iter().map(|p| root().join(p)).collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        if text.contains("../shared") {
            offenders.push(file.display().to_string());
        }
    }
    assert!(offenders.is_empty(), "files that point outside the clone: {offenders:?}");
}

#[test]
fn the_slugs_are_githubs() {
    assert_eq!(slug(" Fork / bridge"), "fork--bridge");
    assert_eq!(slug(" TLS: `wss://`"), "tls-wss");
    assert_eq!(slug(" Playing the internet: the emulator's impairments"), "playing-the-internet-the-emulators-impairments");
    assert!(Path::new(&root()).join("docs/protocol.md").exists());
}

#[test]
fn the_python_bot_in_the_docs_is_the_one_the_tests_run() {
    let page = std::fs::read_to_string(root().join("docs/processors.md")).unwrap();
    let bot = std::fs::read_to_string(root().join("examples/python/fork_bot.py")).unwrap();
    assert!(page.contains(&format!("```python\n{}\n```", bot.trim_end())), "docs/processors.md shows examples/python/fork_bot.py whole");
}
