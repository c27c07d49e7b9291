//! Where a key is written in a TOML text, for error messages: the line of
//! `sinks[1].endpoint` or `env.NAME`, found through the spans `toml_edit`
//! keeps.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// The line (from 1) where `key` is written in the TOML `text`. `key` is a
/// path as errors name it: `workers`, `env.NAME`, `sinks[1].endpoint`,
/// `telemetry.sampling[0].rate`. When only a parent of it is written (a
/// missing field, a default), the line of the closest written parent.
/// `None` when the text does not parse or the first part of the path is
/// not written.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut span: Option<Range<usize>> = None;
    for segment in segments(key) {
        let Some((found, next)) = node.child(segment) else {
            break;
        };
        span = found.or(span);
        node = next;
    }
    span.map(|s| line_at(text, s.start))
}

/// The line (from 1) holding byte `offset` of `text`.
pub fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[1][2].c` → `a`, `b`, 1, 2, `c`.
fn segments(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                out.push(Segment::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    /// The span of the child (its key, or the element) and the child.
    fn child(self, segment: Segment<'_>) -> Option<(Option<Range<usize>>, Node<'a>)> {
        let value = match self {
            Node::Table(t) => return table_child(t, segment),
            Node::Item(Item::Table(t)) => return table_child(t, segment),
            Node::Item(Item::ArrayOfTables(a)) => {
                let Segment::Index(i) = segment else {
                    return None;
                };
                let t = a.get(i)?;
                return Some((t.span(), Node::Table(t)));
            }
            Node::Item(Item::Value(v)) | Node::Value(v) => v,
            Node::Item(Item::None) => return None,
        };
        match (value, segment) {
            (Value::InlineTable(t), Segment::Key(k)) => {
                let (key, item) = t.get_key_value(k)?;
                Some((key.span(), Node::Item(item)))
            }
            (Value::Array(a), Segment::Index(i)) => {
                let v = a.get(i)?;
                Some((v.span(), Node::Value(v)))
            }
            _ => None,
        }
    }
}

fn table_child<'a>(
    table: &'a Table,
    segment: Segment<'_>,
) -> Option<(Option<Range<usize>>, Node<'a>)> {
    let Segment::Key(k) = segment else {
        return None;
    };
    let (key, item) = table.get_key_value(k)?;
    Some((key.span(), Node::Item(item)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
workers = 2
env = { A = \"1\", B = \"2\" }

[telemetry]
sampling = [
  { pattern = \"a\", rate = 0.5 },
  { pattern = \"b\", rate = 2.0 },
]

[[sinks]]
kind = \"log\"

[[sinks]]
kind = \"otel\"
endpoint = \"collector\"
";

    #[test]
    fn keys_are_found_at_their_lines() {
        let line = |key| line_of_key(TEXT, key);
        assert_eq!(line("workers"), Some(1));
        assert_eq!(line("env.B"), Some(2));
        assert_eq!(line("telemetry.sampling[1].rate"), Some(7));
        assert_eq!(line("telemetry.sampling[0]"), Some(6));
        assert_eq!(line("sinks[1].endpoint"), Some(15));
        assert_eq!(line("sinks[1].kind"), Some(14));
        // Not written: the closest parent.
        assert_eq!(line("sinks[1].sample_ratio"), Some(13));
        assert_eq!(line("sinks[0]"), Some(10));
        assert_eq!(line("nothing"), None);
        assert_eq!(line_of_key("a = = 1", "a"), None);
    }

    #[test]
    fn paths_split_into_keys_and_indexes() {
        use Segment::*;
        assert_eq!(
            segments("a.b[1][2].c"),
            vec![Key("a"), Key("b"), Index(1), Index(2), Key("c")]
        );
        assert_eq!(segments("sinks[0]"), vec![Key("sinks"), Index(0)]);
    }
}
