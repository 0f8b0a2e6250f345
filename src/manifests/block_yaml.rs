//! A fast reader for the YAML that manifests are nearly always written in: block mappings and
//! sequences (indented or not, as `kubectl` writes them) of one-line plain or quoted scalars,
//! with comments and `---` between documents. Each document is translated to JSON text, which
//! the JSON reader then reads straight into typed objects; the YAML reader (libyaml) reads about
//! 40 MB/s, under half the speed of the rest of `evaluate` over a fleet's manifests.
//!
//! It reads exactly what the YAML reader reads, or nothing: anything outside that subset (flow
//! collections other than `[]`, `{}` and one-line lists of words and integers, block scalars `|`
//! and `>`, anchors, aliases, tags, scalars over several lines, escapes in double quotes,
//! floats, tabs, carriage returns, byte order marks, directives, document end markers, nesting
//! deeper than [`MAX_DEPTH`], keys longer than [`MAX_KEY`]) sends the whole text to the YAML
//! reader, so that the values read, and an error's wording, line and
//! column, are the YAML reader's. A plain scalar that might be something other than a string (a
//! number, a date, `~`) is resolved by the YAML reader itself.

use serde_json::Value;

/// Nesting beyond this goes to the YAML reader (and its recursion limit).
const MAX_DEPTH: usize = 64;
/// A longer key goes to the YAML reader, which looks no further than 1024 characters for the
/// colon of a key on one line, and refuses the line.
const MAX_KEY: usize = 1000;

/// The JSON text of each document of `text`, as the YAML reader counts them (an empty text or
/// document is `null`); `None` when `text` is not in the subset read here.
pub(super) fn to_json(text: &str) -> Option<Vec<String>> {
    if !printable(text) {
        return None;
    }
    let mut documents = Vec::new();
    let mut lines: Vec<Line<'_>> = Vec::new();
    // Whether the current document was opened, by content or by a `---` line: the first `---`
    // of a text opens its first document rather than ending an empty one.
    let mut opened = false;
    for raw in text.split('\n') {
        if raw == "---" {
            if opened {
                documents.push(document(&mut lines)?);
                lines.clear();
            }
            opened = true;
            continue;
        }
        let content = raw.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = raw.len() - content.len();
        if indent == 0 && ["---", "...", "%"].iter().any(|m| content.starts_with(m)) {
            return None;
        }
        opened = true;
        lines.push(Line {
            indent,
            text: content,
        });
    }
    documents.push(document(&mut lines)?);
    Some(documents)
}

/// Only what the YAML reader accepts without a second thought: printable characters, line feeds
/// as the only line breaks, spaces as the only blanks.
fn printable(text: &str) -> bool {
    let ascii_ok = text
        .bytes()
        .all(|b| b == b'\n' || (0x20..0x7f).contains(&b) || b >= 0x80);
    ascii_ok
        && (text.is_ascii()
            || text.chars().all(|c| {
                c.is_ascii()
                    || matches!(c, '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
                        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
            }))
}

/// A line with content: its indentation, and the rest (neither blank nor a comment).
#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// The JSON text of one document's lines.
fn document(lines: &mut [Line<'_>]) -> Option<String> {
    let Some(first) = lines.first() else {
        return Some("null".to_string());
    };
    if first.indent != 0 {
        return None;
    }
    let size = lines.iter().map(|l| l.text.len() + 4).sum();
    let mut reader = Reader {
        lines,
        next: 0,
        out: String::with_capacity(size),
    };
    reader.collection(0, 0)?;
    (reader.next == reader.lines.len()).then_some(reader.out)
}

struct Reader<'l, 'a> {
    lines: &'l mut [Line<'a>],
    /// The next line to read.
    next: usize,
    out: String,
}

impl<'a> Reader<'_, 'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.next).copied()
    }

    /// The sequence or mapping whose first line is the next one, at `indent`.
    fn collection(&mut self, indent: usize, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        if is_entry(self.peek()?.text) {
            self.sequence(indent, depth)
        } else {
            self.mapping(indent, depth)
        }
    }

    /// A value on the lines after its key (at `parent`) or its `-`: a collection indented
    /// further, a sequence at the key's own indentation (`indentless`), or else `null`.
    fn block_value(&mut self, parent: usize, indentless: bool, depth: usize) -> Option<()> {
        match self.peek() {
            Some(line) if line.indent > parent => self.collection(line.indent, depth),
            Some(line) if line.indent == parent && indentless && is_entry(line.text) => {
                self.sequence(parent, depth)
            }
            _ => {
                self.out.push_str("null");
                Some(())
            }
        }
    }

    /// The next line of the collection at `indent`: `Some(None)` at its end (no line, or one
    /// indented less), `None` for a line indented further than its entries.
    fn line_at(&self, indent: usize) -> Option<Option<Line<'a>>> {
        match self.peek() {
            Some(line) if line.indent > indent => None,
            Some(line) if line.indent == indent => Some(Some(line)),
            _ => Some(None),
        }
    }

    /// A comma before every entry but the first.
    fn separate(&mut self, first: &mut bool) {
        if !std::mem::take(first) {
            self.out.push(',');
        }
    }

    fn mapping(&mut self, indent: usize, depth: usize) -> Option<()> {
        self.out.push('{');
        let mut first = true;
        while let Some(line) = self.line_at(indent)? {
            let (key, rest) = key_line(line.text)?;
            self.separate(&mut first);
            write_string(&mut self.out, key);
            self.out.push(':');
            self.next += 1;
            let rest = rest.trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.block_value(indent, true, depth + 1)?;
            } else {
                self.scalar(rest)?;
                self.no_continuation(indent)?;
            }
        }
        self.out.push('}');
        Some(())
    }

    fn sequence(&mut self, indent: usize, depth: usize) -> Option<()> {
        self.out.push('[');
        let mut first = true;
        while let Some(line) = self.line_at(indent)? {
            if !is_entry(line.text) {
                // The next key of the mapping this sequence is a value of, when written at the
                // key's indentation; anything else is refused there.
                break;
            }
            self.separate(&mut first);
            let after = &line.text[1..];
            let rest = after.trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.next += 1;
                self.block_value(indent, false, depth + 1)?;
            } else if is_entry(rest) || key_line(rest).is_some() {
                // A sequence or mapping that starts on the entry's line: its next entries or
                // keys line up with the first.
                let column = indent + 1 + (after.len() - rest.len());
                self.lines[self.next] = Line {
                    indent: column,
                    text: rest,
                };
                self.collection(column, depth + 1)?;
            } else {
                self.next += 1;
                self.scalar(rest)?;
                self.no_continuation(indent)?;
            }
        }
        self.out.push(']');
        Some(())
    }

    /// After a scalar on the line of a key or entry at `indent`, a line indented further would
    /// continue the scalar (or be an error).
    fn no_continuation(&self, indent: usize) -> Option<()> {
        match self.peek() {
            Some(line) if line.indent > indent => None,
            _ => Some(()),
        }
    }

    /// A scalar written on the rest of a line (`text` is not blank and starts with no space).
    fn scalar(&mut self, text: &str) -> Option<()> {
        match text.as_bytes().first()? {
            b'"' => {
                let body = &text[1..];
                let end = body.find('"')?;
                let content = &body[..end];
                if content.contains('\\') {
                    return None;
                }
                end_of_line(&body[end + 1..])?;
                write_string(&mut self.out, content);
            }
            b'\'' => {
                let (content, after) = single_quoted(&text[1..])?;
                end_of_line(after)?;
                write_string(&mut self.out, &content);
            }
            b'{' => {
                end_of_line(text.strip_prefix("{}")?)?;
                self.out.push_str("{}");
            }
            b'[' => self.flow_sequence(&text[1..])?,
            _ => self.plain(text)?,
        }
        Some(())
    }

    /// A sequence on one line, `[]` or of words and integers (`[mail-acme, 7]`), after its `[`.
    fn flow_sequence(&mut self, text: &str) -> Option<()> {
        let end = text.find(']')?;
        end_of_line(&text[end + 1..])?;
        let items = text[..end].trim_matches(' ');
        self.out.push('[');
        let mut first = true;
        if !items.is_empty() {
            for item in items.split(',') {
                let item = item.trim_matches(' ');
                let word = item.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                    && item
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-/@".contains(&b))
                    && !matches!(
                        item.to_ascii_lowercase().as_str(),
                        "null" | "true" | "false"
                    );
                self.separate(&mut first);
                if word {
                    write_string(&mut self.out, item);
                } else if is_simple_integer(item) {
                    self.out.push_str(item);
                } else {
                    return None;
                }
            }
        }
        self.out.push(']');
        Some(())
    }

    /// A plain (unquoted) scalar, up to a comment.
    fn plain(&mut self, text: &str) -> Option<()> {
        let bytes = text.as_bytes();
        let first = *bytes.first()?;
        if b"[]{},#&*!|>'\"%@`".contains(&first)
            || (b"-?:".contains(&first) && bytes.get(1).is_none_or(|b| *b == b' '))
            || text.starts_with("---")
            || text.starts_with("...")
        {
            return None;
        }
        let value = text
            .find(" #")
            .map_or(text, |comment| &text[..comment])
            .trim_end_matches(' ');
        if value.contains(": ") || value.ends_with(':') || value.contains(['[', ']', '{', '}']) {
            return None;
        }
        match value {
            "null" | "Null" | "NULL" => self.out.push_str("null"),
            "true" | "True" | "TRUE" => self.out.push_str("true"),
            "false" | "False" | "FALSE" => self.out.push_str("false"),
            _ if !may_be_number(value) => write_string(&mut self.out, value),
            _ if is_simple_integer(value) => self.out.push_str(value),
            _ => self.resolved(value)?,
        }
        Some(())
    }

    /// What the YAML reader makes of a plain scalar that could be a number or `~`: the same
    /// alone as on a line of a mapping, as it is neither a marker nor holds `: ` or ` #`. A float
    /// goes to the YAML reader with the rest of the text, as its JSON text need not read back to
    /// the same bits.
    fn resolved(&mut self, value: &str) -> Option<()> {
        let resolved: Value = serde_yaml::from_str(value).ok()?;
        match &resolved {
            Value::Null | Value::Bool(_) | Value::String(_) => {}
            Value::Number(n) if !n.is_f64() => {}
            _ => return None,
        }
        self.out.push_str(&resolved.to_string());
        Some(())
    }
}

/// Whether a line is an entry of a block sequence (`- ...`, or `-` alone).
fn is_entry(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// A line `key: rest` or `key:` with a plain key of letters, digits, `_`, `.`, `-` and `/`
/// (which the YAML reader reads as written, whatever it looks like), of at most
/// [`MAX_KEY`] characters: the key and what follows the colon.
fn key_line(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return None;
    }
    let end = bytes
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || b"_.-/".contains(b)))?;
    let rest = text[end..].strip_prefix(':')?;
    (end <= MAX_KEY && (rest.is_empty() || rest.starts_with(' '))).then_some((&text[..end], rest))
}

/// The content of a single-quoted scalar (`''` is a quote) and what follows it on the line.
fn single_quoted(text: &str) -> Option<(String, &str)> {
    let mut content = String::new();
    let mut rest = text;
    loop {
        let quote = rest.find('\'')?;
        content.push_str(&rest[..quote]);
        rest = &rest[quote + 1..];
        match rest.strip_prefix('\'') {
            Some(after) => {
                content.push('\'');
                rest = after;
            }
            None => return Some((content, rest)),
        }
    }
}

/// Nothing after a scalar but blanks and a comment.
fn end_of_line(after: &str) -> Option<()> {
    let trimmed = after.trim_start_matches(' ');
    (trimmed.is_empty() || trimmed.starts_with('#') && trimmed.len() < after.len()).then_some(())
}

/// Whether a plain scalar could read as something other than a string: numbers (and `.inf`,
/// `.nan`) start with a digit, a sign or a dot, `~` is null. Anything starting otherwise is a
/// string, bar the words of `null`, `true` and `false`.
fn may_be_number(value: &str) -> bool {
    value
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() || b"+-.~".contains(b))
}

/// `0`, or a decimal integer of at most 18 digits without a leading zero: the same number in
/// YAML and in JSON.
fn is_simple_integer(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    value == "0"
        || (1..=18).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `text` as a JSON string (it holds no control characters: see [`printable`]).
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        if b == b'"' || b == b'\\' {
            out.push_str(&text[start..i]);
            out.push('\\');
            start = i;
        }
    }
    out.push_str(&text[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    /// What the YAML reader reads of `text`: each document's value, or its first error.
    fn yaml_reader(text: &str) -> Result<Vec<Value>, String> {
        serde_yaml::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).map_err(|e| e.to_string()))
            .collect()
    }

    /// Whether `text` is read here; when it is, the values must be the YAML reader's.
    fn read_alike(text: &str) -> bool {
        let Some(documents) = to_json(text) else {
            return false;
        };
        let ours: Vec<Value> = documents
            .iter()
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d} from {text:?}")))
            .collect();
        assert_eq!(
            Ok(ours),
            yaml_reader(text),
            "{text:?} read as {documents:?}"
        );
        true
    }

    const KUBECTL: &str = r#"apiVersion: mailsec.io/v1alpha1
kind: Tenant
metadata:
  annotations:
    example.com/owner: team-a
  creationTimestamp: "2026-11-29T12:00:00Z"
  finalizers:
  - mailsec.io/x
  generation: 3
  labels: {}
  name: acme
spec:
  admins:
  - email: a@acme.example
    name: 'Ann O''Neil'
  -   email: "b@acme.example"   # the second
      name: Bob "the builder" \o/
  services:
  - product: email-safeguard
    settings:
      quarantineDays: 30
      enabled: true
      note: null
      tags: []
      domains: [acme.example, acme-corp.example]
      limits: [10, -3]
  users: 10
status: {}
"#;

    #[test]
    fn reads_what_manifests_are_written_in_as_the_yaml_reader_does() {
        let mut texts = crate::fixtures::example_texts();
        texts.push(KUBECTL.to_string());
        texts.push(format!("---\n{KUBECTL}---\n# nothing\n---\n{KUBECTL}---\n"));
        for text in &texts {
            assert!(read_alike(text), "not read here: {text}");
        }
    }

    #[test]
    fn scalars_read_as_the_yaml_reader_reads_them() {
        let values = [
            "x",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "inf",
            "nan",
            "Infinity",
            "NaN",
            "~",
            "",
            "null",
            "Null",
            "NULL",
            "nULL",
            "true",
            "True",
            "TRUE",
            "tRue",
            "false",
            "FALSE",
            "0",
            "-0",
            "+0",
            "7",
            "-7",
            "+5",
            "007",
            "08",
            "-08",
            "00",
            "0x10",
            "0X10",
            "0o7",
            "0b11",
            "0x",
            "+0x1",
            "-0x1",
            "1_000",
            "2026-01-01",
            "2026-01-01T00:00:00Z",
            "12:30",
            "123456789012345678",
            "-123456789012345678",
            "1234567890123456789",
            "18446744073709551615",
            "-9223372036854775808",
            "-x",
            "-.x",
            "~x",
            ".",
            ".x",
            "+",
            "b,c",
            "b#c",
            "b #c",
            "a - b",
            "a ? b",
            "a &b",
            "a *b",
            "a!",
            "<<",
            "=",
            "_x",
            "/x",
            "$x",
            "x:y",
            "http://x",
            "a'b",
            "a\"b",
            "a\\b",
            "é",
            "株式会社",
            "  spaced  ",
            "'it''s'",
            "''",
            "'#'",
            "\"\"",
            "\"a #b\"",
            "\"it's\"",
            "[]",
            "{}",
            "[a]",
            "[a, b]",
            "[ a ,b ]",
            "[7, -3]",
            "[x.y/z, a@b]",
            "-.inf",
            ".nan",
        ];
        let mut read = 0;
        for value in values {
            for text in [
                format!("k: {value}\n"),
                format!("- {value}\n"),
                format!("{value}: k\n"),
            ] {
                read += usize::from(read_alike(&text));
            }
        }
        assert!(read > 150, "read here: {read}");
        for key in [
            "1",
            "true",
            "null",
            "Null",
            "y",
            "0x10",
            "1e3",
            "a.b/c-d_e",
            "_x",
        ] {
            assert!(read_alike(&format!("{key}: v\n")), "{key}");
        }
    }

    #[test]
    fn documents_are_counted_as_the_yaml_reader_counts_them() {
        for text in [
            "",
            "\n",
            "# c\n",
            "---\n",
            "---\n---\n",
            "a: 1\n---\n",
            "---\na: 1\n",
            "a: 1\n---\n---\nb: 2\n",
            "# c\n---\na: 1",
            "a: 1",
            "- a\n- b\n",
            "-\n- b\n",
        ] {
            assert!(read_alike(text), "{text:?}");
        }
    }

    /// What the YAML reader reads some other way, refuses, or words an error about: left to it.
    #[test]
    fn anything_else_is_left_to_the_yaml_reader() {
        let deep = (0..70).fold(String::new(), |text, depth| {
            format!("{text}{}k:\n", " ".repeat(depth))
        });
        let long_key = format!("b:\n  {}: 1\n", "a".repeat(1025));
        assert!(read_alike(&format!("{}: 1\n", "a".repeat(MAX_KEY))));
        for text in [
            "a: 1e3\n",
            "a: 1.5\n",
            "a: .5\n",
            "a: 99999999999999999999\n",
            "a: b: c\n",
            "a: [x, [y]]\n",
            "a: [\"x\"]\n",
            "a: [null]\n",
            "a: [x,]\n",
            "a: {b: 1}\n",
            "a: |\n  x\n",
            "a: >-\n  x\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "? a\n: b\n",
            "a: 1\r\n",
            "\u{feff}a: 1\n",
            "a:\tb\n",
            "a: \"q\\tx\"\n",
            "a: 'x\n  y'\n",
            "a: x\n  y\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: 1\n...\n",
            "  a: 1\n",
            "a: 1\n b: 2\n",
            "--- a\n",
            "a:\n  b\n",
            "a: 1\n- b\n",
            "- a\nb: 1\n",
            "- - a\n - b\n",
            "\"a\": 1\n",
            "a b: 1\n",
            "a:\n  - x\n y: 1\n",
            "a: \"x\"y\n",
            "a: 'x'#c\n",
            "a: b\u{2028}c\n",
            "a: ---\n",
            "a: ...\n",
            "a: -\n",
            "a: ? b\n",
            "a: @b\n",
            "a: %b\n",
            "a: b]\n",
            &deep,
            &long_key,
        ] {
            assert!(
                to_json(text).is_none(),
                "{text:?} read as {:?}",
                to_json(text)
            );
        }
    }

    fn leaf(safe: bool) -> BoxedStrategy<Value> {
        let word = "[a-zA-Z][a-zA-Z0-9_./@-]{0,8}";
        if safe {
            prop_oneof![
                word.prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
                Just(Value::Null),
            ]
            .boxed()
        } else {
            prop_oneof![
                word.prop_map(Value::from),
                "[ -~]{0,10}".prop_map(Value::from),
                "[0-9a-fA-FxXoObe.+_~:-]{1,8}".prop_map(Value::from),
                prop::sample::select(vec!["null", "True", "~", "yes", "-", "---", "1e3", "é"])
                    .prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
                Just(Value::Null),
            ]
            .boxed()
        }
    }

    fn value(safe: bool) -> impl Strategy<Value = Value> {
        let key = if safe {
            "[a-zA-Z_][a-zA-Z0-9_./-]{0,6}"
        } else {
            "[ -~]{0,6}"
        };
        leaf(safe).prop_recursive(5, 48, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map(key, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Documents written by the YAML writer, of words, integers, booleans and nulls in
        /// mappings and sequences, are read here, and as the YAML reader reads them.
        #[test]
        fn what_the_yaml_writer_writes_of_plain_values_is_read_here(
            values in prop::collection::vec(value(true), 1..4),
        ) {
            let text = values
                .iter()
                .map(|v| serde_yaml::to_string(v).expect("YAML"))
                .collect::<Vec<_>>()
                .join("---\n");
            let root_scalar = values.iter().any(|v| !(v.is_object() || v.is_array()));
            let empty = values.iter().any(|v| v.as_object().is_some_and(|m| m.is_empty())
                || v.as_array().is_some_and(|a| a.is_empty()));
            prop_assert!(read_alike(&text) || root_scalar || empty, "{text}");
        }

        /// Any value the YAML writer writes: read as the YAML reader reads it, or left to it.
        #[test]
        fn what_the_yaml_writer_writes_is_read_alike_or_left(value in value(false)) {
            let text = serde_yaml::to_string(&value).expect("YAML");
            read_alike(&text);
        }

        /// Manifests with a few characters changed anywhere: read as the YAML reader reads them
        /// (errors included), or left to it.
        #[test]
        fn edited_manifests_are_read_alike_or_left(
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..4, prop::sample::select(vec![
                " ", "  ", "-", "- ", ":", ": ", "#", " #", "'", "\"", "\n", "\n  ", "\n- ", "---\n",
                "[", "]", "{}", "[]", ",", "~", "&a ", "*a", "|", ">", "?", "0", "1.5", "null", "x",
                "é", "\\",
            ])), 1..4),
        ) {
            let mut text = KUBECTL.to_string();
            for (at, remove, insert) in edits {
                let mut at = at.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + remove).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(at..end, insert);
            }
            read_alike(&text);
        }
    }
}
