//! A fast reader for the common shapes of CMDB YAML.
//!
//! serde_yaml builds the whole event stream in memory first, which for a
//! million-CI export costs tens of seconds and gigabytes. This reader handles
//! the subset real exports use (block or one-line flow mappings per CI, plain,
//! single- or double-quoted scalars, flow or block lists, comments) in one pass
//! over the lines. It is deliberately strict: anything it is not sure to read
//! exactly as serde_yaml would (anchors, tags, multi-line scalars, numbers,
//! booleans or nulls where strings are expected, unknown or duplicate keys,
//! missing fields, ...) makes it return `None`, and the caller parses with
//! serde_yaml instead, which also produces the error messages.

use chrono::{DateTime, Utc};

use super::{CiSpec, CiType, CmdbFile, Criticality, MaintenanceWindow};

/// Parses `text` if it is in the supported subset.
pub(super) fn parse(text: &str) -> Option<CmdbFile> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut cur = Cur { rest: text, peeked: None, bad: false };
    let first = cur.next()?;
    if first.indent != 0 {
        return None;
    }
    let rest = first.text.strip_prefix("cis:")?;
    let mut cis = Vec::new();
    if let Some(after) = rest.trim_start().strip_prefix("[]") {
        let done = before_comment(after)?.is_empty() && cur.next().is_none() && !cur.bad;
        return done.then_some(CmdbFile { cis });
    }
    if !before_comment(rest)?.is_empty() {
        return None;
    }
    // Roughly one CI per 250 bytes in typical exports.
    cis.reserve(text.len() / 250);
    let item_indent = cur.peek()?.indent;
    while let Some(l) = cur.peek() {
        if l.indent != item_indent {
            return None;
        }
        let body = l.text.strip_prefix("- ")?;
        cur.next();
        let trimmed = body.trim_start();
        let key_col = item_indent + 2 + (body.len() - trimmed.len());
        let ci = if trimmed.starts_with('{') {
            let (fields, rest) = flow_map(trimmed)?;
            if !before_comment(rest)?.is_empty() || cur.peek().is_some_and(|n| n.indent > item_indent) {
                return None;
            }
            let mut b = Builder::default();
            for (k, v) in fields {
                b.set(field(k)?, v)?;
            }
            b.finish()?
        } else {
            block_item(&mut cur, trimmed, key_col, item_indent)?
        };
        cis.push(ci);
    }
    if cur.bad {
        return None;
    }
    Some(CmdbFile { cis })
}

/// A significant (non-blank, non-comment) line.
#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    /// Content after the indentation, trailing whitespace removed.
    text: &'a str,
}

struct Cur<'a> {
    rest: &'a str,
    peeked: Option<Line<'a>>,
    /// A tab in the indentation (or similar): give up.
    bad: bool,
}

impl<'a> Cur<'a> {
    fn peek(&mut self) -> Option<Line<'a>> {
        if self.peeked.is_none() {
            self.peeked = self.read();
        }
        self.peeked
    }

    fn next(&mut self) -> Option<Line<'a>> {
        match self.peeked.take() {
            Some(l) => Some(l),
            None => self.read(),
        }
    }

    fn read(&mut self) -> Option<Line<'a>> {
        while !self.bad && !self.rest.is_empty() {
            let (line, rest) = match self.rest.find('\n') {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, ""),
            };
            self.rest = rest;
            let content = line.trim_start_matches(' ');
            let indent = line.len() - content.len();
            let content = content.trim_end();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if content.starts_with(['\t', '\r']) || content.starts_with("---") || content.starts_with("...") {
                self.bad = true;
                return None;
            }
            return Some(Line { indent, text: content });
        }
        None
    }
}

/// `rest` without a trailing comment, trimmed; `None` when a comment is not
/// separated by whitespace.
fn before_comment(rest: &str) -> Option<&str> {
    let t = rest.trim_start();
    if t.is_empty() {
        return Some("");
    }
    if t.starts_with('#') {
        return (t.len() < rest.len()).then_some("");
    }
    Some(t)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Name,
    Type,
    Aliases,
    Ips,
    Site,
    OwnerGroup,
    Oncall,
    Runbook,
    Criticality,
    DependsOn,
    RunsOn,
    ConnectsTo,
    Maintenance,
}

fn field(key: &str) -> Option<Field> {
    Some(match key {
        "id" => Field::Id,
        "name" => Field::Name,
        "type" => Field::Type,
        "aliases" => Field::Aliases,
        "ips" => Field::Ips,
        "site" => Field::Site,
        "owner_group" => Field::OwnerGroup,
        "oncall" => Field::Oncall,
        "runbook" => Field::Runbook,
        "criticality" => Field::Criticality,
        "depends_on" => Field::DependsOn,
        "runs_on" => Field::RunsOn,
        "connects_to" => Field::ConnectsTo,
        "maintenance" => Field::Maintenance,
        _ => return None,
    })
}

enum Value {
    Str(String),
    List(Vec<String>),
    Windows(Vec<MaintenanceWindow>),
}

#[derive(Default)]
struct Builder {
    seen: u32,
    id: Option<String>,
    name: Option<String>,
    kind: Option<CiType>,
    aliases: Vec<String>,
    ips: Vec<String>,
    site: Option<String>,
    owner_group: Option<String>,
    oncall: Option<String>,
    runbook: Option<String>,
    criticality: Option<Criticality>,
    depends_on: Vec<String>,
    runs_on: Vec<String>,
    connects_to: Vec<String>,
    maintenance: Vec<MaintenanceWindow>,
}

impl Builder {
    fn set(&mut self, f: Field, v: Value) -> Option<()> {
        let bit = 1u32 << (f as u32);
        if self.seen & bit != 0 {
            return None; // duplicate key: serde_yaml reports it
        }
        self.seen |= bit;
        match (f, v) {
            (Field::Id, Value::Str(s)) => self.id = Some(s),
            (Field::Name, Value::Str(s)) => self.name = Some(s),
            (Field::Type, Value::Str(s)) => self.kind = Some(ci_type(&s)?),
            (Field::Criticality, Value::Str(s)) => self.criticality = Some(criticality(&s)?),
            (Field::Site, Value::Str(s)) => self.site = Some(s),
            (Field::OwnerGroup, Value::Str(s)) => self.owner_group = Some(s),
            (Field::Oncall, Value::Str(s)) => self.oncall = Some(s),
            (Field::Runbook, Value::Str(s)) => self.runbook = Some(s),
            (Field::Aliases, Value::List(l)) => self.aliases = l,
            (Field::Ips, Value::List(l)) => self.ips = l,
            (Field::DependsOn, Value::List(l)) => self.depends_on = l,
            (Field::RunsOn, Value::List(l)) => self.runs_on = l,
            (Field::ConnectsTo, Value::List(l)) => self.connects_to = l,
            (Field::Maintenance, Value::Windows(w)) => self.maintenance = w,
            // An empty flow list `[]` for maintenance.
            (Field::Maintenance, Value::List(l)) if l.is_empty() => {}
            _ => return None,
        }
        Some(())
    }

    fn finish(self) -> Option<CiSpec> {
        Some(CiSpec {
            id: self.id?,
            name: self.name?,
            kind: self.kind?,
            aliases: self.aliases,
            ips: self.ips,
            site: self.site,
            owner_group: self.owner_group,
            oncall: self.oncall,
            runbook: self.runbook,
            criticality: self.criticality,
            depends_on: self.depends_on,
            runs_on: self.runs_on,
            connects_to: self.connects_to,
            maintenance: self.maintenance,
        })
    }
}

fn ci_type(s: &str) -> Option<CiType> {
    CiType::ALL.into_iter().find(|t| t.as_str() == s)
}

fn criticality(s: &str) -> Option<Criticality> {
    [Criticality::Critical, Criticality::High, Criticality::Medium, Criticality::Low].into_iter().find(|c| c.as_str() == s)
}

/// `key: rest` of a block mapping line; the key must be a plain identifier.
fn split_key(s: &str) -> Option<(&str, &str)> {
    let i = s.find(':')?;
    let key = &s[..i];
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    let rest = &s[i + 1..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((key, rest))
}

/// A block mapping CI whose first line (after `- `) is `first`.
fn block_item(cur: &mut Cur<'_>, first: &str, key_col: usize, item_indent: usize) -> Option<CiSpec> {
    let mut b = Builder::default();
    let mut line = first;
    loop {
        let (key, rest) = split_key(line)?;
        let f = field(key)?;
        let v = match before_comment(rest)? {
            "" => Value::from_block(f, block_seq(cur, key_col, f)?)?,
            inline => {
                let v = inline_value(f, inline)?;
                if cur.peek().is_some_and(|n| n.indent > key_col) {
                    return None; // multi-line scalar or similar
                }
                v
            }
        };
        b.set(f, v)?;
        match cur.peek() {
            Some(n) if n.indent == key_col => {
                line = n.text;
                cur.next();
            }
            Some(n) if n.indent == item_indent => break,
            None => break,
            Some(_) => return None,
        }
    }
    b.finish()
}

/// Value written on the key's line: a flow list or a scalar.
fn inline_value(f: Field, s: &str) -> Option<Value> {
    if s.starts_with('[') {
        let (items, rest) = flow_seq(s)?;
        before_comment(rest)?.is_empty().then_some(Value::List(items))
    } else if s.starts_with('{') {
        None
    } else {
        let (v, rest) = scalar(s, false)?;
        if !before_comment(rest)?.is_empty() || matches!(f, Field::Maintenance) {
            return None;
        }
        Some(Value::Str(v))
    }
}

enum SeqItem {
    Str(String),
    Window(MaintenanceWindow),
}

impl Value {
    fn from_block(f: Field, items: Vec<SeqItem>) -> Option<Value> {
        if f == Field::Maintenance {
            let w = items.into_iter().map(|i| if let SeqItem::Window(w) = i { Some(w) } else { None });
            w.collect::<Option<Vec<_>>>().map(Value::Windows)
        } else {
            let s = items.into_iter().map(|i| if let SeqItem::Str(s) = i { Some(s) } else { None });
            s.collect::<Option<Vec<_>>>().map(Value::List)
        }
    }
}

/// A block sequence under a key with an empty value (at `key_col` or deeper).
fn block_seq(cur: &mut Cur<'_>, key_col: usize, f: Field) -> Option<Vec<SeqItem>> {
    let first = cur.peek()?;
    if !(first.indent > key_col || first.indent == key_col && first.text.starts_with("- ")) {
        return None; // a null value
    }
    let j = first.indent;
    let mut items = Vec::new();
    while let Some(l) = cur.peek() {
        if l.indent != j || !l.text.starts_with("- ") {
            break;
        }
        cur.next();
        let body = &l.text[2..];
        let trimmed = body.trim_start();
        let col = j + 2 + (body.len() - trimmed.len());
        if f == Field::Maintenance {
            let w = if trimmed.starts_with('{') {
                let (fields, rest) = flow_map(trimmed)?;
                if !before_comment(rest)?.is_empty() {
                    return None;
                }
                window(fields)?
            } else {
                let mut fields = Vec::new();
                let mut line = trimmed;
                loop {
                    let (key, rest) = split_key(line)?;
                    let (v, rest) = scalar(before_comment(rest)?, false)?;
                    if !before_comment(rest)?.is_empty() {
                        return None;
                    }
                    fields.push((key, Value::Str(v)));
                    match cur.peek() {
                        Some(n) if n.indent == col => {
                            line = n.text;
                            cur.next();
                        }
                        _ => break,
                    }
                }
                window(fields)?
            };
            items.push(SeqItem::Window(w));
        } else {
            if trimmed.starts_with(['[', '{', '-']) {
                return None;
            }
            let (v, rest) = scalar(trimmed, false)?;
            if !before_comment(rest)?.is_empty() {
                return None;
            }
            items.push(SeqItem::Str(v));
        }
        if cur.peek().is_some_and(|n| n.indent > j) {
            return None;
        }
    }
    if j > key_col && cur.peek().is_some_and(|n| n.indent > key_col) {
        return None;
    }
    Some(items)
}

fn window(fields: Vec<(&str, Value)>) -> Option<MaintenanceWindow> {
    let (mut start, mut end, mut change_id, mut reason) = (None, None, None, None);
    for (k, v) in fields {
        let Value::Str(s) = v else { return None };
        let slot = match k {
            "start" => &mut start,
            "end" => &mut end,
            "change_id" => &mut change_id,
            "reason" => &mut reason,
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(s);
    }
    Some(MaintenanceWindow {
        start: start?.parse::<DateTime<Utc>>().ok()?,
        end: end?.parse::<DateTime<Utc>>().ok()?,
        change_id,
        reason,
        annotate: false,
    })
}

/// `{ key: value, ... }` on one line; values are scalars or flow lists of scalars.
fn flow_map(s: &str) -> Option<(Vec<(&str, Value)>, &str)> {
    let mut rest = s.strip_prefix('{')?.trim_start();
    let mut out = Vec::new();
    if let Some(r) = rest.strip_prefix('}') {
        return Some((out, r));
    }
    loop {
        let end = rest.find(':')?;
        let key = &rest[..end];
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return None;
        }
        let after = &rest[end + 1..];
        if !after.starts_with(' ') {
            return None;
        }
        let after = after.trim_start();
        let (v, r) = if after.starts_with('[') {
            let (l, r) = flow_seq(after)?;
            (Value::List(l), r)
        } else {
            let (v, r) = scalar(after, true)?;
            (Value::Str(v), r)
        };
        out.push((key, v));
        let r = r.trim_start();
        if let Some(r) = r.strip_prefix('}') {
            return Some((out, r));
        }
        rest = r.strip_prefix(',')?.trim_start();
        if rest.starts_with('}') {
            return None; // trailing comma: leave it to serde_yaml
        }
    }
}

/// `[a, b, ...]` on one line.
fn flow_seq(s: &str) -> Option<(Vec<String>, &str)> {
    let mut rest = s.strip_prefix('[')?.trim_start();
    let mut out = Vec::new();
    if let Some(r) = rest.strip_prefix(']') {
        return Some((out, r));
    }
    loop {
        if rest.starts_with(['[', '{']) {
            return None;
        }
        let (v, r) = scalar(rest, true)?;
        out.push(v);
        let r = r.trim_start();
        if let Some(r) = r.strip_prefix(']') {
            return Some((out, r));
        }
        rest = r.strip_prefix(',')?.trim_start();
        if rest.starts_with(']') {
            return None;
        }
    }
}

/// One scalar at the start of `s` (single line): returns it and the rest.
fn scalar(s: &str, flow: bool) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('"') {
        return double_quoted(body);
    }
    if let Some(body) = s.strip_prefix('\'') {
        return single_quoted(body);
    }
    let end = if flow { s.find([',', ']', '}']).unwrap_or(s.len()) } else { s.len() };
    let mut v = &s[..end];
    if let Some(p) = comment_start(v) {
        if flow {
            return None; // the comment would swallow the rest of the flow collection
        }
        v = &v[..p];
    }
    let v = v.trim_end();
    plain_ok(v, flow).then(|| (v.to_string(), &s[end..]))
}

/// Position of the first ` #` (a comment in a plain scalar's line).
fn comment_start(v: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = v[from..].find('#') {
        let k = from + k;
        if k > 0 && v.as_bytes()[k - 1] == b' ' {
            return Some(k - 1);
        }
        from = k + 1;
    }
    None
}

fn double_quoted(body: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let mut code = 0u32;
                        for _ in 0..4 {
                            code = code * 16 + chars.next()?.1.to_digit(16)?;
                        }
                        out.push(char::from_u32(code)?); // surrogates: leave to serde_yaml
                    }
                    _ => return None,
                }
            }
            c if c.is_control() && c != '\t' => return None,
            c => out.push(c),
        }
    }
    None // continues on the next line
}

fn single_quoted(body: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let i = rest.find('\'')?;
        out.push_str(&rest[..i]);
        if rest[i + 1..].starts_with('\'') {
            out.push('\'');
            rest = &rest[i + 2..];
        } else {
            if out.chars().any(|c| c.is_control() && c != '\t') {
                return None;
            }
            return Some((out, &rest[i + 1..]));
        }
    }
}

/// A plain scalar serde_yaml certainly reads as this very string.
pub(super) fn plain_ok(v: &str, flow: bool) -> bool {
    let b = v.as_bytes();
    let Some(&b0) = b.first() else { return false };
    // Common case: ASCII letters, digits and `-_./` only.
    let simple = b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'));
    if simple {
        if !b0.is_ascii_alphanumeric() {
            return false;
        }
    } else if !plain_chars_ok(v, flow) {
        return false;
    }
    const KEYWORDS: [&str; 11] = ["true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"];
    if b.len() <= 5 && KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(v)) {
        return false;
    }
    // Anything a YAML resolver could read as a number.
    if b0.is_ascii_digit() {
        let numeric = b.iter().all(|c| c.is_ascii_hexdigit() || b"._+-xXoO".contains(c));
        let dots = b.iter().filter(|&&c| c == b'.').count();
        if (numeric && dots < 2) || v.parse::<f64>().is_ok() {
            return false;
        }
    }
    true
}

/// Character rules for plain scalars beyond the simple alphabet.
fn plain_chars_ok(v: &str, flow: bool) -> bool {
    let Some(first) = v.chars().next() else {
        return false;
    };
    if !first.is_alphanumeric() {
        return false;
    }
    let mut prev = first;
    let mut chars = v.chars().skip(1).peekable();
    while let Some(c) = chars.next() {
        let ok = match c {
            ':' => chars.peek().is_some_and(|&n| !(n.is_whitespace() || flow && matches!(n, ',' | '[' | ']' | '{' | '}'))),
            '#' => !prev.is_whitespace(),
            ',' | '[' | ']' | '{' | '}' => !flow,
            '\t' => false,
            c => !c.is_control(),
        };
        if !ok {
            return false;
        }
        prev = c;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(text: &str) -> Option<CmdbFile> {
        serde_yaml::from_str(text).ok()
    }

    /// The fast reader either declines or agrees with serde_yaml.
    fn agree(text: &str) -> Option<CmdbFile> {
        let fast = parse(text);
        if let Some(f) = &fast {
            assert_eq!(Some(f), serde(text).as_ref(), "fast reader disagrees with serde_yaml on:\n{text}");
        }
        fast
    }

    #[test]
    fn reads_the_usual_shapes() {
        let text = r#"# comment
cis:
  - id: a   # trailing comment
    name: "A \"quoted\" \u00e9"
    type: switch
    aliases: [a.example.net, 'it''s', "x, y"]
    ips:
      - 10.0.0.1
      - "fe80::1"
    site: par1
    criticality: high
    depends_on: []
    # a comment line inside the mapping
    connects_to:
    - b
    runbook: https://runbooks.example.net/a#section
    maintenance:
      - { start: 2026-11-24T11:00:00Z, end: 2026-11-24T13:00:00Z, change_id: CHG1, reason: "kernel: patching" }
      - start: 2027-01-01T00:00:00+01:00
        end: '2027-01-02T00:00:00Z'
  - { id: b, name: b, type: vm, runs_on: [a], ips: [10.0.0.2] }
  -   id: c
      name: Paris DC 1
      type: business_service
"#;
        let f = agree(text).expect("fast path");
        assert_eq!(f.cis.len(), 3);
        assert_eq!(f.cis[0].name, "A \"quoted\" é");
        assert_eq!(f.cis[0].aliases, vec!["a.example.net", "it's", "x, y"]);
        assert_eq!(f.cis[0].maintenance.len(), 2);
        assert_eq!(f.cis[2].name, "Paris DC 1");
        // The same at indentation 0 and with CRLF line ends.
        let flat = "cis:\n- id: a\n  name: a\n  type: vm\n  aliases:\n  - x\n- id: b\n  name: b\n  type: vm\n";
        assert_eq!(agree(flat).expect("fast path").cis.len(), 2);
        assert!(agree(&flat.replace('\n', "\r\n")).is_some());
        assert_eq!(agree("cis: []\n"), Some(CmdbFile::default()));
        assert_eq!(agree("\u{feff}cis: [] # none\n"), Some(CmdbFile::default()));
    }

    #[test]
    fn declines_what_it_cannot_read_exactly() {
        let base = "cis:\n  - id: a\n    name: a\n    type: vm\n";
        let declined = [
            "",
            "cis:\n",
            "cis: ~\n",
            "---\ncis: []\n",
            "other: 1\ncis: []\n",
            "cis:\n  - id: a\n    name: a\n",                                // missing type
            "cis:\n  - id: a\n    name: a\n    type: vm\n    colour: red\n", // unknown key
            "cis:\n  - id: a\n    name: a\n    type: vm\n    name: b\n",     // duplicate key
            "cis:\n  - id: a\n    name: a\n    type: laptop\n",              // unknown variant
            "cis:\n  - id: 42\n    name: a\n    type: vm\n",                 // number
            "cis:\n  - id: a\n    name: yes\n    type: vm\n",                // YAML 1.1 bool
            "cis:\n  - id: a\n    name: a\n    type: vm\n    site:\n",       // null
            "cis:\n  - id: a\n    name: a\n    type: vm\n    site: ~\n",
            "cis:\n  - id: &x a\n    name: *x\n    type: vm\n",                // anchors
            "cis:\n  - id: !!str a\n    name: a\n    type: vm\n",              // tags
            "cis:\n  - id: a\n    name: long\n      name\n    type: vm\n",     // multi-line plain
            "cis:\n  - id: \"a\n    b\"\n    name: a\n    type: vm\n",         // multi-line quoted
            "cis:\n  - id: a\n    name: a\n    type: vm\n    ips: 10.0.0.1\n", // scalar for a list
            "cis:\n  - id: a\n    name: a\n    type: vm\n    ips: [a, ]\n",    // trailing comma
            "cis:\n  - id: a\n    name: \"\\x41\"\n    type: vm\n",            // YAML-only escape
            "cis:\n\t- id: a\n",                                               // tab
            "cis:\n  - id: a\n    name: a\n    type: vm\n    maintenance:\n      - { start: tomorrow, end: 2026-01-01T00:00:00Z }\n",
            "cis:\n  - id: a\n    name: a\n    type: vm\n  other: 1\n",
            "cis:\n  - id: a\n    name: a: b\n    type: vm\n",
        ];
        for t in declined {
            assert!(agree(t).is_none(), "should decline:\n{t}");
        }
        assert!(agree(base).is_some());
    }

    #[test]
    fn scalars_agree_with_serde_yaml() {
        let samples = [
            "a",
            "A-b_c.d",
            "10.0.0.1",
            "fe80::1",
            "2001:db8::1",
            "12:30",
            "1:2:3",
            "1.0.0",
            "v1.2",
            "007",
            "0x1F",
            "1e3",
            "1_000",
            "0o17",
            "+1",
            "-1",
            ".5",
            "1.5",
            "inf",
            "NaN",
            "True",
            "off",
            "Y",
            "null",
            "Null",
            "~",
            "a b",
            "a  b",
            "a #b",
            "a#b",
            "a:b",
            "a: b",
            "a:",
            "a,b",
            "a[1]",
            "{x}",
            "x}",
            "ünï",
            "日本",
            "2026-01-01",
            "2026-01-01T00:00:00Z",
            "https://runbooks.example.net/a?b=c&d#e",
            "@x",
            "`x",
            "%x",
            "!x",
            "&x",
            "*x",
            "|",
            ">",
            "?x",
            "-x",
            "- x",
            "'q'",
            "\"q\"",
            "a'b",
            "a\"b",
            "a\\b",
            "=",
            "<<",
            "0b101",
            "0.",
            "1e",
            "e1",
            "1.2.3.4:80",
        ];
        for s in samples {
            for (flow, tmpl) in
                [(false, "cis:\n  - id: x\n    name: {}\n    type: vm\n"), (true, "cis:\n  - {{ id: x, name: {}, type: vm }}\n")]
            {
                let text = tmpl.replace("{}", s).replace("{{", "{").replace("}}", "}");
                let _ = flow;
                agree(&text);
                let listed = format!("cis:\n  - id: x\n    name: x\n    type: vm\n    aliases: [{s}]\n");
                agree(&listed);
                let quoted = format!("cis:\n  - id: x\n    name: {}\n    type: vm\n", serde_json::to_string(s).unwrap());
                assert_eq!(agree(&quoted).expect("quoted strings are always read").cis[0].name, s);
            }
        }
    }
}

#[cfg(test)]
mod shipped_files {
    use super::*;

    #[test]
    fn shipped_and_generated_files_take_the_fast_path() {
        let example = crate::topology::generate::example_yaml();
        let fast = parse(&example).expect("fast path");
        assert_eq!(fast, serde_yaml::from_str::<CmdbFile>(&example).unwrap());
        let fixture = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/cmdb-small.yaml")).unwrap();
        let fast = parse(&fixture).expect("fast path");
        assert_eq!(fast, serde_yaml::from_str::<CmdbFile>(&fixture).unwrap());
        let big = crate::topology::write_yaml(&crate::topology::synthetic(&crate::topology::GenParams::scaled(3_000)));
        assert_eq!(parse(&big).expect("fast path"), serde_yaml::from_str::<CmdbFile>(&big).unwrap());
    }
}
