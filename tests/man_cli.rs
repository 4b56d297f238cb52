//! The documentation in the binary (issue 15): a man page per subcommand
//! (`gatherd man --dir DIR` writes them all, `gatherd man SUBCOMMAND` prints
//! one), a page for the job file format, a top page whose SEE ALSO names
//! only pages that exist, and an EXAMPLES section in every subcommand's
//! `--help`.

mod support;

use clap::CommandFactory;
use support::*;

/// Every subcommand clap knows (`help` aside).
fn subcommands() -> Vec<String> {
    gatherd::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|name| name != "help")
        .collect()
}

#[test]
fn man_writes_a_page_for_every_subcommand_and_the_job_format() {
    let dir = tempfile::tempdir().expect("dir");
    let out = gatherd().args(["man", "--dir"]).arg(dir.path()).output().expect("gatherd man --dir");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut pages = vec!["gatherd.1".to_string(), "gatherd.job.5".to_string()];
    pages.extend(subcommands().iter().map(|name| format!("gatherd-{name}.1")));
    for page in &pages {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("no {page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page:\n{text}");
    }
    for name in subcommands() {
        let out = gatherd().args(["man", &name]).output().expect("gatherd man NAME");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(".TH"), "gatherd man {name}: {text}");
        assert!(text.to_lowercase().contains(&format!("gatherd-{name}")), "gatherd man {name} is its page:\n{text}");
    }
    // Every page the top page (or any page) refers to exists.
    for page in &pages {
        let text = std::fs::read_to_string(dir.path().join(page)).expect("read");
        for (at, _) in text.match_indices("gatherd\\-") {
            let rest = &text[at + "gatherd\\-".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            let after = &rest[name.len()..];
            let section = after.trim_start_matches("\\fR").trim_start_matches("\\fP");
            if let Some(section) = section.strip_prefix('(').and_then(|s| s.chars().next()) {
                let named = format!("gatherd-{name}.{section}");
                assert!(pages.contains(&named), "{page} names {named}, which does not exist");
            }
        }
    }
    let jobs = std::fs::read_to_string(dir.path().join("gatherd.job.5")).expect("read");
    for key in ["schedule", "timezone", "gather", "sequence", "timeout", "retries"] {
        assert!(jobs.contains(key), "gatherd.job(5) describes `{key}`");
    }
    let out = gatherd().args(["man", "gatherd.job"]).output().expect("gatherd man gatherd.job");
    assert_eq!(String::from_utf8_lossy(&out.stdout), jobs, "`gatherd man gatherd.job` prints the format's page");
    let out = gatherd().args(["man", "nosuch"]).output().expect("gatherd man nosuch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("no man page `nosuch`"), "{err}");
}

#[test]
fn every_subcommands_help_has_examples() {
    for name in subcommands() {
        let out = gatherd().args([&name, "--help"]).output().expect("gatherd NAME --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "`gatherd {name} --help` has no Examples:\n{text}");
        assert!(text.contains(&format!("gatherd {name}")), "`gatherd {name} --help`'s examples use it:\n{text}");
    }
    for name in ["run", "check"] {
        let out = gatherd().args([name, "--help"]).output().expect("help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Rhai"), "`gatherd {name} --help` says Rhai files work too:\n{text}");
    }
}
