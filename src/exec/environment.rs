//! What a run's steps get from outside the job: the environment of their
//! processes and the secrets.
//!
//! A step's process does not inherit gatherd's environment (which holds
//! what is gatherd's own: `GATHERD_TOKEN`, a service's credentials). It
//! gets a minimal set taken from gatherd's environment once, when the run's
//! [`Environment`] is made — `PATH` (else `/usr/local/bin:/usr/bin:/bin`),
//! `LANG`, `LC_ALL`, `TZ` when set, and `HOME`, `USER`, `LOGNAME`, `SHELL`
//! of the user it runs as — plus the config's `pass_env` names, then the
//! job's `env`/`env_file`, the step's own `env`, and `GATHERD_JOB`,
//! `GATHERD_RUN_ID`, `GATHERD_STEP`, `GATHERD_ATTEMPT`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::secrets::{Masker, Secrets};
use crate::job::{Job, Template};
use crate::script::lookup::{Lookup, LookupKind};

/// The `PATH` a step gets when gatherd has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Variables taken from gatherd's environment when set (besides `PATH`).
const KEPT: &[&str] = &["LANG", "LC_ALL", "TZ"];

/// What every step of a run starts from; see the module docs.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The minimal set and the `pass_env` variables, in that order.
    base: Vec<(String, String)>,
    /// The `pass_env` variables alone: what a Rhai `env(name)` may read
    /// besides the job's own.
    passed: BTreeMap<String, String>,
    secrets: Secrets,
    masker: Masker,
}

impl Default for Environment {
    /// The minimal set of this process, no `pass_env`, no secrets.
    fn default() -> Self {
        Environment::of_this_process(&[], Secrets::default())
    }
}

impl Environment {
    /// The environment steps get from this process: its minimal set, the
    /// variables `pass_env` names (names, or patterns with `*`), and `secrets`.
    pub fn of_this_process(pass_env: &[String], secrets: Secrets) -> Environment {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
            .ok()
            .flatten()
            .map(|u| (u.dir.to_string_lossy().into_owned(), u.name, u.shell.to_string_lossy().into_owned()));
        Environment::from_vars(std::env::vars_os(), user, pass_env, secrets)
    }

    /// The environment built from `vars` (gatherd's), the user gatherd runs
    /// as (home, name, shell; else the variables' own), `pass_env` and
    /// `secrets`.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
        user: Option<(String, String, String)>,
        pass_env: &[String],
        secrets: Secrets,
    ) -> Environment {
        // Only variables whose name and value are text: a step's env is text.
        let vars: BTreeMap<String, String> =
            vars.into_iter().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        let mut base = Vec::new();
        base.push(("PATH".to_string(), vars.get("PATH").cloned().unwrap_or_else(|| DEFAULT_PATH.to_string())));
        for name in KEPT {
            if let Some(v) = vars.get(*name) {
                base.push(((*name).to_string(), v.clone()));
            }
        }
        match user {
            Some((home, name, shell)) => {
                base.push(("HOME".into(), home));
                base.push(("USER".into(), name.clone()));
                base.push(("LOGNAME".into(), name));
                if !shell.is_empty() {
                    base.push(("SHELL".into(), shell));
                }
            }
            None => {
                for name in ["HOME", "USER", "LOGNAME", "SHELL"] {
                    if let Some(v) = vars.get(name) {
                        base.push((name.to_string(), v.clone()));
                    }
                }
            }
        }
        let passed: BTreeMap<String, String> = vars
            .iter()
            .filter(|(k, _)| pass_env.iter().any(|p| glob_matches(p, k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        base.retain(|(k, _)| !passed.contains_key(k));
        base.extend(passed.iter().map(|(k, v)| (k.clone(), v.clone())));
        let masker = secrets.masker();
        Environment { base, passed, secrets, masker }
    }

    /// The variables every process step starts with.
    pub fn base(&self) -> &[(String, String)] {
        &self.base
    }

    /// The value of a `pass_env` variable.
    pub fn passed(&self, name: &str) -> Option<&str> {
        self.passed.get(name).map(String::as_str)
    }

    /// The config's secrets.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The masker of the secrets' values.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }
}

/// What a script's `env(name)` and `secret(name)` answer in a run of `job`:
/// the job's declared environment (its `env`/`env_file`, whose templates may
/// read secrets, then `pass_env`) and the config's secrets.
pub fn script_lookup(job: &Job, environment: &Arc<Environment>) -> Lookup {
    // Only the job's env is kept, not the job (whose tree may be large).
    let job_env = job.env.clone();
    let environment = environment.clone();
    Arc::new(move |kind, name| match kind {
        LookupKind::Secret => match environment.secrets.get(name) {
            Some(value) => Ok(Some(value.to_string())),
            None => Err(super::step::unknown_secret(name, "`secret(...)`", &environment.secrets)),
        },
        LookupKind::Env => match job_env.iter().rev().find(|(k, _)| k == name) {
            Some((_, t)) => render_with_secrets(t, &environment.secrets).map(Some),
            None => Ok(environment.passed(name).map(str::to_owned)),
        },
    })
}

/// `t` rendered with the secrets it names, and nothing else.
fn render_with_secrets(t: &Template, secrets: &Secrets) -> Result<String, String> {
    let mut values = BTreeMap::new();
    for name in t.secrets() {
        let value = secrets.get(name).ok_or_else(|| super::step::unknown_secret(name, "the job's `env`", secrets))?;
        values.insert(name.as_str(), value);
    }
    t.render(|| minijinja::context! { secrets => values })
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else { return false };
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        list.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn only_the_minimal_set_and_pass_env_are_kept() {
        let env = Environment::from_vars(
            vars(&[
                ("PATH", "/p"),
                ("LANG", "C.UTF-8"),
                ("GATHERD_TOKEN", "t"),
                ("AWS_REGION", "eu"),
                ("AWS_KEY", "k"),
                ("HOME", "/wrong"),
            ]),
            Some(("/home/g".into(), "g".into(), "/bin/sh".into())),
            &["AWS_*".to_string()],
            Secrets::default(),
        );
        let names: Vec<&str> = env.base().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "LANG", "HOME", "USER", "LOGNAME", "SHELL", "AWS_KEY", "AWS_REGION"]);
        assert_eq!(env.base()[2].1, "/home/g", "HOME is the user's, not the variable's");
        assert_eq!(env.passed("AWS_REGION"), Some("eu"));
        assert_eq!(env.passed("GATHERD_TOKEN"), None);
    }

    #[test]
    fn without_a_path_the_default_one() {
        let env = Environment::from_vars(vars(&[]), None, &[], Secrets::default());
        assert_eq!(env.base(), [("PATH".to_string(), DEFAULT_PATH.to_string())]);
    }

    #[test]
    fn globs_match_with_stars_anywhere() {
        assert!(glob_matches("AWS_*", "AWS_REGION"));
        assert!(glob_matches("*_PROXY", "HTTPS_PROXY"));
        assert!(glob_matches("A*B*C", "AxxBxxC"));
        assert!(glob_matches("EXACT", "EXACT"));
        assert!(!glob_matches("EXACT", "EXACTLY"));
        assert!(!glob_matches("A*B", "AB_"));
        assert!(glob_matches("*", "ANY"));
    }
}
