//! A job as a person names it: its path in the jobs folder, with or without
//! the extension (`seed-gather` for `seed-gather.toml`), the same way in
//! the CLI and the API; a name that fits two files (`a` for `a.toml` and
//! `a.rhai`) is an error naming both, and an unknown name gets a
//! did-you-mean. The one place that rule lives.

use std::path::Path;

use super::JobFormat;

/// Why a name does not pick one job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No job by that name, with or without an extension.
    #[error("no job `{name}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    Unknown {
        /// The name as given.
        name: String,
        /// The closest job's id, if one is close.
        suggestion: Option<String>,
    },
    /// The name without an extension fits more than one file.
    #[error("`{name}` could be {}: name one with its extension", candidates.join(" or "))]
    Ambiguous {
        /// The name as given.
        name: String,
        /// Every job it fits, sorted.
        candidates: Vec<String>,
    },
}

/// The id (path with extension) of the job `name` means among `known`: the
/// id itself, else the one job whose id is `name` plus a job file's
/// extension.
pub fn resolve<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Result<String, NameError> {
    let known: Vec<&str> = known.into_iter().collect();
    if known.contains(&name) {
        return Ok(name.to_string());
    }
    let mut candidates: Vec<String> =
        known.iter().filter(|id| stem(id) == Some(name)).map(|id| (*id).to_string()).collect();
    candidates.sort();
    candidates.dedup();
    match candidates.len() {
        1 => Ok(candidates.remove(0)),
        0 => Err(NameError::Unknown { name: name.to_string(), suggestion: suggest(name, &known) }),
        _ => Err(NameError::Ambiguous { name: name.to_string(), candidates }),
    }
}

/// `id` without its job file extension (`sub/a` for `sub/a.toml`); `None`
/// when it has none.
fn stem(id: &str) -> Option<&str> {
    JobFormat::of(id)?;
    let ext = Path::new(id).extension()?.to_str()?;
    id.strip_suffix(ext)?.strip_suffix('.')
}

/// The id closest to `name`, compared with each id and with its stem.
fn suggest(name: &str, known: &[&str]) -> Option<String> {
    let forms: Vec<(&str, &str)> =
        known.iter().flat_map(|id| [(*id, *id)].into_iter().chain(stem(id).map(|s| (s, *id)))).collect();
    let best = closest(name, forms.iter().map(|(form, _)| *form))?;
    forms.iter().find(|(form, _)| *form == best).map(|(_, id)| (*id).to_string())
}

/// The candidate closest to `word`: a small edit distance or a high
/// Jaro-Winkler similarity, whichever finds one; ties go to the first. The
/// rule of every did-you-mean (the loader's for keys and step names too).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_l = word.to_lowercase();
    let max_edits = match word.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        6..=9 => 2,
        _ => 3,
    };
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let c_l = c.to_lowercase();
        if c_l == word_l {
            return Some(c);
        }
        let edits = strsim::damerau_levenshtein(&word_l, &c_l);
        let jw = strsim::jaro_winkler(&word_l, &c_l);
        let score = if edits <= max_edits {
            2.0 - edits as f64 / 10.0
        } else if jw >= 0.9 {
            jw
        } else {
            continue;
        };
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 4] = ["seed-gather.toml", "a.toml", "a.rhai", "sub/backup.rhai"];

    #[test]
    fn a_job_is_named_with_or_without_its_extension() {
        assert_eq!(resolve("seed-gather.toml", KNOWN), Ok("seed-gather.toml".to_string()));
        assert_eq!(resolve("seed-gather", KNOWN), Ok("seed-gather.toml".to_string()));
        assert_eq!(resolve("sub/backup", KNOWN), Ok("sub/backup.rhai".to_string()));
        assert_eq!(resolve("a.rhai", KNOWN), Ok("a.rhai".to_string()));
    }

    #[test]
    fn a_name_that_fits_two_files_names_both() {
        let e = resolve("a", KNOWN).expect_err("ambiguous");
        assert_eq!(e.to_string(), "`a` could be a.rhai or a.toml: name one with its extension");
    }

    #[test]
    fn an_unknown_name_gets_a_did_you_mean_when_one_is_close() {
        let e = resolve("seed-gathr", KNOWN).expect_err("unknown");
        assert_eq!(e.to_string(), "no job `seed-gathr`; did you mean `seed-gather.toml`?");
        let e = resolve("sub/backup.toml", KNOWN).expect_err("unknown");
        assert_eq!(e.to_string(), "no job `sub/backup.toml`; did you mean `sub/backup.rhai`?");
        let e = resolve("health-check", KNOWN).expect_err("unknown");
        assert_eq!(e.to_string(), "no job `health-check`");
    }
}
