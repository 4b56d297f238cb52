//! Strings in step fields that may use the results of earlier steps:
//! `{{ steps.fetch.output }}` and, in an `each` step, `{{ input }}`.
//!
//! Templates are Jinja (minijinja). Parsing happens once, at load time, to learn
//! which steps a template refers to so the loader can check they are guaranteed
//! to have finished; rendering happens when the step starts.

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior, Value};

/// A string field of a step, possibly a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    /// Names of the steps it refers to (`steps.NAME...`), sorted.
    steps: Vec<String>,
    /// Whether it refers to `input`.
    uses_input: bool,
    /// Whether it has any Jinja syntax at all; plain strings skip the engine.
    dynamic: bool,
}

impl Template {
    /// A string used as is, with no template syntax.
    pub fn literal(source: impl Into<String>) -> Template {
        Template { source: source.into(), steps: Vec::new(), uses_input: false, dynamic: false }
    }

    /// Parses `source`; on a syntax error returns minijinja's message.
    pub fn parse(source: &str) -> Result<Template, String> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Template::literal(source));
        }
        let env = environment();
        let tmpl = env.template_from_str(source).map_err(|e| describe(&e))?;
        let mut steps = BTreeSet::new();
        let mut uses_input = false;
        for var in tmpl.undeclared_variables(true) {
            let mut parts = var.split('.');
            match parts.next() {
                Some("input") => uses_input = true,
                Some("steps") => match parts.next() {
                    Some(name) => {
                        steps.insert(name.to_string());
                    }
                    None => {
                        return Err("write `steps.NAME.output`, not `steps` alone".to_string());
                    }
                },
                Some(other) => {
                    return Err(format!(
                        "unknown variable `{other}`: a template may use `steps.NAME.output` \
                         and, in an `each` step, `input`"
                    ));
                }
                None => {}
            }
        }
        Ok(Template { source: source.to_string(), steps: steps.into_iter().collect(), uses_input, dynamic: true })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The steps this template reads the results of.
    pub fn steps(&self) -> &[String] {
        &self.steps
    }

    /// Whether it reads `input` (only meaningful in an `each` step).
    pub fn uses_input(&self) -> bool {
        self.uses_input
    }

    /// Renders with `ctx` (a map with `steps` and `input`), or returns the literal.
    ///
    /// `ctx` is only built when the template is dynamic, so plain strings cost
    /// nothing: callers pass a closure.
    pub fn render(&self, ctx: impl FnOnce() -> Value) -> Result<String, String> {
        if !self.dynamic {
            return Ok(self.source.clone());
        }
        environment().render_str(&self.source, ctx()).map_err(|e| describe(&e))
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// minijinja's error with its detail, on one line.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_string_is_literal() {
        let t = Template::parse("hello").unwrap();
        assert_eq!(t.render(|| unreachable!()).unwrap(), "hello");
        assert!(t.steps().is_empty());
    }

    #[test]
    fn finds_referenced_steps_and_input() {
        let t = Template::parse("{{ steps.fetch.output }} {{ steps.read_it.output | upper }} {{ input }}").unwrap();
        assert_eq!(t.steps(), ["fetch", "read_it"]);
        assert!(t.uses_input());
    }

    #[test]
    fn renders_outputs() {
        let t = Template::parse("got {{ steps.a.output }} and {{ input }}").unwrap();
        let out = t
            .render(|| minijinja::context! { steps => minijinja::context!{ a => minijinja::context!{ output => "x" } }, input => 3 })
            .unwrap();
        assert_eq!(out, "got x and 3");
    }

    #[test]
    fn unknown_variable_is_an_error() {
        let err = Template::parse("{{ nope }}").unwrap_err();
        assert!(err.contains("unknown variable `nope`"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported() {
        assert!(Template::parse("{{ steps.a.output ").is_err());
    }
}
