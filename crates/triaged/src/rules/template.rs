//! Key templates such as `{source}|{ci}|{labels.instance}`: literal text with
//! `{field}` placeholders, parsed once and rendered per event.

use std::collections::HashMap;

use crate::event::Event;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    /// An event field path (see `Event::field`), `ci` (the bound CI id), or a
    /// regex capture name set by a rule.
    Field(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Piece>,
}

impl Template {
    /// Parses `text`; `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("template `{text}`: unclosed `{{`")),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(format!("template `{text}`: empty placeholder `{{}}`"));
                    }
                    if !lit.is_empty() {
                        parts.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Piece::Field(name));
                }
                '}' => return Err(format!("template `{text}`: unmatched `}}` (write `}}}}` for a literal brace)")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Piece::Lit(lit));
        }
        Ok(Template { source: text.to_string(), parts })
    }

    /// The placeholders used, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Piece::Field(f) => Some(f.as_str()),
            Piece::Lit(_) => None,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders for `event`; `ci` fills `{ci}`, `captures` fills rule regex
    /// capture names. A missing value renders as the empty string.
    pub fn render(&self, event: &Event, ci: Option<&str>, captures: &HashMap<String, String>) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.parts {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Field(f) if f == "ci" => out.push_str(ci.or(event.ci.host.as_deref()).or(event.ci.ip.as_deref()).unwrap_or("")),
                Piece::Field(f) => {
                    if let Some(v) = captures.get(f) {
                        out.push_str(v)
                    } else if let Some(v) = event.field(f) {
                        out.push_str(v)
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CiHint, Severity, Status};

    fn ev() -> Event {
        Event {
            source: "alertmanager".into(),
            source_id: None,
            ci: CiHint { host: Some("web-01".into()), service: None, ip: None },
            check: "HighLatency".into(),
            severity: Severity::Major,
            status: Status::Firing,
            summary: String::new(),
            labels: [("instance".to_string(), "web-01:9100".to_string())].into(),
            annotations: Default::default(),
            time: chrono::Utc::now(),
            origin: None,
            ends_at: None,
        }
    }

    #[test]
    fn renders_fields_ci_and_captures() {
        let t = Template::parse("{source}|{ci}|{check}|{labels.instance}|{port}|{{x}}").unwrap();
        let caps = [("port".to_string(), "9100".to_string())].into();
        assert_eq!(t.render(&ev(), Some("ci-7"), &caps), "alertmanager|ci-7|HighLatency|web-01:9100|9100|{x}");
        assert_eq!(t.render(&ev(), None, &HashMap::new()), "alertmanager|web-01|HighLatency|web-01:9100||{x}");
        assert_eq!(t.fields().collect::<Vec<_>>(), ["source", "ci", "check", "labels.instance", "port"]);
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in ["{source", "a}b", "{}", "{ }"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
