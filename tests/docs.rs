//! The documentation a clone carries is whole: every relative link in the README and the pages
//! under `docs/` names a file of the repository (never one outside it), and every `#anchor`
//! names a heading of its page; the README's first call, run as it is written against the
//! embedded default, prints what the README shows (the figures aside). (The TOML examples of
//! the pages are loaded as configurations by `config::tests`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::TestServer;

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

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut in_code = false;
    text.lines().filter(move |line| {
        if line.starts_with("```") {
            in_code = !in_code;
            return false;
        }
        !in_code
    })
}

fn anchors(text: &str) -> Vec<String> {
    prose(text).filter(|line| line.starts_with('#')).map(|line| slug(line.trim_start_matches('#'))).collect()
}

/// The targets of the inline links `[text](target)` outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
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

/// Lines with every number replaced by `#`, to compare shapes.
fn shape(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let mut shaped = String::new();
        let mut in_number = false;
        for c in line.chars() {
            if c.is_ascii_digit() || (in_number && c == '.') {
                if !in_number {
                    shaped.push('#');
                }
                in_number = true;
            } else {
                in_number = false;
                shaped.push(c);
            }
        }
        out.push(shaped);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_first_call_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("```sh\ncargo run --release -- call").expect("the README's call example");
    let block = &readme[start + 6..];
    let (command, rest) = block.split_once("```\n").unwrap();
    let expected = rest.strip_prefix("```\n").expect("its output follows").split("```").next().unwrap();
    let server = TestServer::start(callpipe::config::DEFAULT_CONFIG).await;
    let record = std::env::temp_dir().join(format!("callpipe-docs-demo-{}.wav", std::process::id()));
    let command = command
        .replace("\\\n", " ")
        .replace("cargo run --release --", env!("CARGO_BIN_EXE_callpipe"))
        .replace("127.0.0.1:8080", &server.addr.to_string())
        .replace("demo.wav", record.to_str().unwrap());
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("sh").args(["-c", &command]).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).replace(&server.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(shape(&printed), shape(expected), "the README's output is not what the call prints:\n{printed}");
    assert!(printed.contains("frames sent 250 received 250"), "{printed}");
    assert!(printed.contains("dtmf sent 3"), "{printed}");
    assert!(hound::WavReader::open(&record).is_ok(), "the recording the README names");
    let _ = std::fs::remove_file(record);
    server.stop().await;
}
