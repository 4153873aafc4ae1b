//! Where each key of a config file is written, from the TOML parser's own
//! spans: a message names the line of the very key it is about, even when
//! the same key name appears in several sections.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table};

/// The parsed document's keys and their positions.
pub struct KeyLines<'a> {
    text: &'a str,
    /// `None` when the text is not TOML at all (the deserializer reports
    /// that with its own span).
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> KeyLines<'a> {
    pub fn parse(text: &'a str) -> KeyLines<'a> {
        KeyLines {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// The line (1-based) where `section.key` is written (`[section]` then
    /// `key = …`, or `section.key = …`, or an inline table).
    pub fn line(&self, section: &str, key: &str) -> Option<usize> {
        let table = self.doc.as_ref()?.as_table();
        let (_, item) = table.get_key_value(section)?;
        let (k, _) = item.as_table_like()?.get_key_value(key)?;
        self.line_of(k.span()?.start)
    }

    /// The line of byte offset `at`.
    pub fn line_of(&self, at: usize) -> Option<usize> {
        let before = self.text.get(..at.min(self.text.len()))?;
        Some(before.matches('\n').count() + 1)
    }

    /// The text of line `line`, trimmed.
    pub fn shown(&self, line: usize) -> &str {
        self.text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .trim()
    }

    /// The line of the unknown key `key` the deserializer reported at
    /// `span` (the key itself, or the table it is in), or of the only key
    /// of that name anywhere.
    pub fn unknown_key(&self, key: &str, span: Option<Range<usize>>) -> Option<usize> {
        let mut found = Vec::new();
        collect(self.doc.as_ref()?.as_table(), key, &mut found);
        let within = |k: &Range<usize>| {
            span.as_ref()
                .is_some_and(|s| s.start <= k.start && k.end <= s.end.max(s.start + 1))
        };
        let at = found
            .iter()
            .find(|k| within(k))
            .or_else(|| (found.len() == 1).then(|| &found[0]))?;
        self.line_of(at.start)
    }
}

/// The spans of every key named `key`, in `table` and the tables in it.
fn collect(table: &Table, key: &str, out: &mut Vec<Range<usize>>) {
    for (k, item) in table
        .iter()
        .filter_map(|(name, _)| table.get_key_value(name))
    {
        if k.get() == key {
            out.extend(k.span());
        }
        if let Item::Table(t) = item {
            collect(t, key, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[source]\nkind = \"file\"\npath = \"/x\"\n\n[daemon]\n# path = \"no\"\nstate_dir = \"/s\"\npath = \"/y\"\n[metrics]\nlisten = \"\"\n";

    #[test]
    fn a_key_in_two_sections_has_two_lines() {
        let lines = KeyLines::parse(TEXT);
        assert_eq!(lines.line("source", "path"), Some(3));
        assert_eq!(lines.line("daemon", "path"), Some(8));
        assert_eq!(lines.line("daemon", "state_dir"), Some(7));
        assert_eq!(lines.line("metrics", "path"), None);
        assert_eq!(lines.shown(8), "path = \"/y\"");
    }

    #[test]
    fn dotted_keys_and_inline_tables_have_lines_too() {
        let lines = KeyLines::parse("source.kind = \"file\"\ndaemon = { table = \"t\" }\n");
        assert_eq!(lines.line("source", "kind"), Some(1));
        assert_eq!(lines.line("daemon", "table"), Some(2));
    }

    #[test]
    fn an_unknown_key_is_found_in_the_table_the_error_names() {
        let lines = KeyLines::parse(TEXT);
        let daemon = TEXT.find("[daemon]").expect("daemon")..TEXT.find("[metrics]").expect("m");
        assert_eq!(lines.unknown_key("path", Some(daemon)), Some(8));
        assert_eq!(lines.unknown_key("listen", None), Some(10));
        // Two candidates and no table to choose by: no guess.
        assert_eq!(lines.unknown_key("path", None), None);
    }
}
