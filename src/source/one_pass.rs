//! A master document read once, converted while it is read, for the two
//! shapes that get large: Marathon's `{"apps": [...]}` (each app converted
//! the moment it is read) and Mesos `/master/state` (each task compacted
//! and kept as it is read, converted at the end). The `file` source uses it
//! so that a changed file is read once and never held whole.
//!
//! It is a fast path, not a second parser with its own rules: a document
//! of any other shape, one carrying a key that the whole-document parser
//! ([`super::document`]) would look at twice (a schema, an event, an
//! agent's state, nested groups...), and any invalid one answers
//! [`OnePass::Whole`], and the caller parses the whole document with
//! [`super::document::parse_document_kind`], which knows every shape and
//! words every error. The result of a fast path equals that parser's for
//! the same bytes (tests compare both on every fixture).

use std::fmt;
use std::io::BufRead;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer;

use super::document::{DocumentKind, Parsed};
use super::wire::marathon::{self, App, Conversion, VersionCache};
use super::wire::mesos::{KeptFramework, KeptMasterState, KeptTask, Slave};
use crate::config::GroupsConfig;

/// What a one-pass read gave.
#[derive(Debug)]
pub enum OnePass {
    Parsed(Parsed),
    /// Not read in one pass: parse the whole document for the answer.
    Whole,
}

/// Read one document from `reader` (a byte order mark first is skipped).
/// A Marathon app list may have taught `versions` what its apps are even
/// when the answer is [`OnePass::Whole`]: that is true either way.
pub fn read_document(
    reader: &mut impl BufRead,
    groups: &GroupsConfig,
    versions: &mut VersionCache,
) -> OnePass {
    if skip_bom(reader).is_err() {
        return OnePass::Whole;
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    let top = Top {
        groups,
        versions,
        seen: Seen::default(),
    };
    let outcome = de
        .deserialize_map(top)
        .and_then(|outcome| de.end().map(|()| outcome));
    match outcome {
        Ok(Some(parsed)) => OnePass::Parsed(parsed),
        Ok(None) | Err(_) => OnePass::Whole,
    }
}

fn skip_bom(reader: &mut impl BufRead) -> std::io::Result<()> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    if reader.fill_buf()?.starts_with(BOM) {
        reader.consume(BOM.len());
    }
    Ok(())
}

/// Which of the keys the decision needs the document had.
#[derive(Default)]
struct Seen {
    apps: bool,
    frameworks: bool,
}

/// Keys that make [`super::document`] reject or route a document
/// differently than by `apps` or `frameworks` alone.
const RISKY: &[&str] = &[
    "$schema",
    "properties",
    "eventType",
    "master_hostname",
    "completed_executors",
    "args",
    "groups",
    "app",
    "type",
    "subscribed",
    "get_state",
    "get_tasks",
];

/// The top-level object.
struct Top<'a> {
    groups: &'a GroupsConfig,
    versions: &'a mut VersionCache,
    seen: Seen,
}

impl<'de> Visitor<'de> for Top<'_> {
    /// `None`: not a one-pass shape.
    type Value = Option<Parsed>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a master document (an object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Parsed>, A::Error> {
        let Top {
            groups,
            versions,
            mut seen,
        } = self;
        let mut apps = Apps {
            groups,
            versions: Some(versions),
            conversion: None,
            waiting: Vec::new(),
        };
        let mut state = KeptMasterState::default();
        // Keys read into `state` or `apps`: a repeated one is left to the
        // whole-document parser (its typed parse refuses duplicates).
        let mut read: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let handled = matches!(
                key.as_str(),
                "apps" | "frameworks" | "slaves" | "orphan_tasks"
            );
            if RISKY.contains(&key.as_str()) || (handled && read.contains(&key)) {
                // The whole-document parser decides; stop here.
                return Ok(None);
            }
            match key.as_str() {
                "apps" => {
                    seen.apps = true;
                    map.next_value_seed(AppsSeed(&mut apps))?;
                }
                "frameworks" => {
                    seen.frameworks = true;
                    state.frameworks = map
                        .next_value::<Option<Vec<KeptFramework>>>()?
                        .unwrap_or_default();
                }
                "slaves" => {
                    state.slaves = map.next_value::<Option<Vec<Slave>>>()?.unwrap_or_default();
                }
                "orphan_tasks" => {
                    state.orphan_tasks = map
                        .next_value::<Option<Vec<KeptTask>>>()?
                        .unwrap_or_default();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if handled {
                read.push(key);
            }
        }
        if seen.apps && !seen.frameworks {
            return Ok(apps.finish());
        }
        if seen.frameworks && !seen.apps {
            let mut view = state.view(groups);
            view.conflicts = view.ip_conflicts();
            return Ok(Some(Parsed {
                kind: DocumentKind::MesosMasterState,
                view,
            }));
        }
        Ok(None)
    }
}

/// The conversion of an `apps` list, started at the first app with tasks
/// (a list in which no app has tasks is an error the whole-document parser
/// words; the apps before that first one wait, definitions only).
struct Apps<'a> {
    groups: &'a GroupsConfig,
    /// Handed to the conversion when it starts.
    versions: Option<&'a mut VersionCache>,
    conversion: Option<Conversion<'a>>,
    waiting: Vec<App>,
}

impl Apps<'_> {
    fn add(&mut self, app: App) {
        if self.conversion.is_none() {
            if app.tasks.is_none() {
                self.waiting.push(app);
                return;
            }
            let Some(versions) = self.versions.take() else {
                return;
            };
            let mut conversion = Conversion::new(true, self.groups, versions);
            for waiting in self.waiting.drain(..) {
                conversion.add(&waiting);
            }
            self.conversion = Some(conversion);
        }
        if let Some(conversion) = &mut self.conversion {
            conversion.add(&app);
        }
    }

    fn finish(self) -> Option<Parsed> {
        let mut view = self.conversion?.finish();
        view.conflicts = view.ip_conflicts();
        Some(Parsed {
            kind: DocumentKind::MarathonApps,
            view,
        })
    }
}

/// The `apps` value, converted app by app.
struct AppsSeed<'s, 'a>(&'s mut Apps<'a>);

impl<'de> DeserializeSeed<'de> for AppsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        let apps = self.0;
        marathon::walk_app_list(de, &mut |app: App| apps.add(app))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::document::parse_document_kind;
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("fixture dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }

    fn one_pass(bytes: &[u8]) -> OnePass {
        let mut reader = std::io::BufReader::with_capacity(16, bytes);
        read_document(
            &mut reader,
            &GroupsConfig::default(),
            &mut VersionCache::default(),
        )
    }

    #[test]
    fn every_fixture_read_in_one_pass_gives_what_the_whole_parse_gives() {
        let mut all = Vec::new();
        files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
            &mut all,
        );
        let mut fast = 0;
        for path in all {
            let bytes = std::fs::read(&path).expect("read fixture");
            let OnePass::Parsed(got) = one_pass(&bytes) else {
                continue;
            };
            fast += 1;
            let want = parse_document_kind(
                &bytes,
                &GroupsConfig::default(),
                &mut VersionCache::default(),
            )
            .unwrap_or_else(|e| panic!("{}: one pass accepted, whole parse: {e}", path.display()));
            assert_eq!(got.kind, want.kind, "{}", path.display());
            assert_eq!(
                format!("{:?}", got.view),
                format!("{:?}", want.view),
                "{}",
                path.display()
            );
        }
        assert!(fast >= 10, "only {fast} fixtures took the one-pass path");
    }

    #[test]
    fn other_shapes_and_bad_documents_are_left_to_the_whole_parse() {
        let with_tasks = r#"{"id":"/a","tasks":[]}"#;
        for doc in [
            String::new(),
            "[]".into(),
            r#"{"apps": []}"#.into(),
            r#"{"apps": [{"id":"/a"}]}"#.into(),
            format!(r#"{{"apps": [{with_tasks}], "$schema": "x"}}"#),
            format!(r#"{{"apps": [{with_tasks}], "groups": []}}"#),
            format!(r#"{{"apps": [{with_tasks}], "frameworks": []}}"#),
            r#"{"frameworks": [], "frameworks": []}"#.into(),
            r#"{"frameworks": [], "master_hostname": "a"}"#.into(),
            r#"{"type": "SUBSCRIBED", "subscribed": {}}"#.into(),
            format!(r#"{{"apps": [{with_tasks}]"#),
            format!(r#"{{"apps": [{with_tasks}]}} {{}}"#),
        ] {
            assert!(matches!(one_pass(doc.as_bytes()), OnePass::Whole), "{doc}");
        }
        let ok = format!("\u{feff}{{\"apps\": [{with_tasks}]}}\n");
        assert!(matches!(one_pass(ok.as_bytes()), OnePass::Parsed(_)));
    }
}
