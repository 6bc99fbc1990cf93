//! What the commands print: aligned tables and plain sizes and times for
//! people, JSON for scripts.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::failure::Failure;

/// How the program talks to the person at the terminal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ui {
    /// Show the live progress display.
    pub(crate) progress: bool,
    /// `--quiet`: no summaries on standard error.
    pub(crate) quiet: bool,
}

/// Columns of text, left-aligned, separated by two spaces.
pub(crate) struct Table {
    headers: Vec<&'static str>,
    /// Each row's cells, joined by `SEPARATOR`: one allocation per row,
    /// which matters for a million of them.
    rows: Vec<Box<str>>,
    /// Each column's width so far, in characters.
    widths: Vec<usize>,
}

/// Between a row's cells: no cell holds it.
const SEPARATOR: char = '\0';

impl Table {
    pub(crate) fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
            widths: headers.iter().map(|h| h.chars().count()).collect(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        for (width, cell) in self.widths.iter_mut().zip(&cells) {
            debug_assert!(!cell.contains(SEPARATOR));
            *width = (*width).max(cell.chars().count());
        }
        self.rows.push(cells.join("\0").into_boxed_str());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn print(&self) -> Result<(), Failure> {
        written(self.write_to(&mut std::io::BufWriter::new(std::io::stdout().lock())))
    }

    /// Writes the table, a line at a time: columns padded to their widest
    /// cell, the last one not, no trailing spaces.
    fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut line = String::new();
        let headers = self.headers.join("\0");
        for row in std::iter::once(headers.as_str()).chain(self.rows.iter().map(|r| &**r)) {
            line.clear();
            let cells = row.split(SEPARATOR);
            let last = self.widths.len() - 1;
            for (i, (cell, width)) in cells.zip(&self.widths).enumerate() {
                line.push_str(cell);
                if i != last {
                    let pad = width.saturating_sub(cell.chars().count()) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let trimmed = line.trim_end().len();
            line.truncate(trimmed);
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        out.flush()
    }
}

/// Writes to standard output; a closed pipe (`| head`) is not an error.
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    written(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )
}

/// What a write to standard output came to: a closed pipe is not an error.
fn written(result: std::io::Result<()>) -> Result<(), Failure> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::failed(format!("cannot write the output: {e}"))),
    }
}

/// Prints `value` as pretty JSON.
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::failed(format!("cannot write JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// `1 result`, `3 results`.
pub(crate) fn results(n: usize) -> String {
    match n {
        1 => "1 result".to_owned(),
        n => format!("{n} results"),
    }
}

// The same sizes and times as the web view's.
pub(crate) use routine_core::human::{age, run_time, size, span, timestamp};

/// Seconds since the Unix epoch, for JSON.
pub(crate) fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_pads_every_column_but_the_last() {
        let mut table = Table::new(&["KEY", "ROUTINE", "NOTE"]);
        table.row(vec![
            "3b8ef55b8fc9".into(),
            "fit@0.0.1".into(),
            String::new(),
        ]);
        table.row(vec!["a1".into(), "é@1".into(), "expired".into()]);
        let mut out = Vec::new();
        table.write_to(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "KEY           ROUTINE    NOTE\n\
             3b8ef55b8fc9  fit@0.0.1\n\
             a1            é@1        expired\n"
        );
    }
}
