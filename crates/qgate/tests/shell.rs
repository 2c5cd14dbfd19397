//! `qgate completions SHELL` and `qgate man [COMMAND]`: what ripgrep and hyperfine ship.

#![allow(clippy::unwrap_used)]

mod common;

fn stdout(args: &[&str]) -> (i32, String) {
    let r = common::exec(args);
    (r.code.unwrap_or(-1), r.stdout)
}

#[test]
fn completions_cover_every_command_and_flag() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, text) = stdout(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        for word in ["compare", "sensitivity", "max-memory", "image-size"] {
            assert!(text.contains(word), "{shell}: '{word}' missing");
        }
        assert!(
            !text.contains("__worker"),
            "{shell}: the hidden worker is offered"
        );
    }
    let (code, _) = stdout(&["completions", "tcsh"]);
    assert_eq!(code, 2);
}

#[test]
fn man_pages_for_qgate_and_each_command() {
    let (code, page) = stdout(&["man"]);
    assert_eq!(code, 0);
    assert!(
        page.contains(".TH qgate 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(
        page.contains("qgate\\-compare(1)"),
        "the command list is missing"
    );
    let (code, page) = stdout(&["man", "compare"]);
    assert_eq!(code, 0);
    assert!(
        page.contains(".TH qgate-compare 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(page.contains("\\-\\-baseline") && page.contains("\\-\\-max\\-memory"));
    let (code, _) = stdout(&["man", "__worker"]);
    assert_eq!(code, 2);
}
