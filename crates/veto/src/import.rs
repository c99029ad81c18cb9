//! CSV import: a file in, validated rows or line-numbered errors out.
//!
//! [`read_rows`] checks the header (the whole file is refused with a
//! [`FileError`] if it cannot be used) and returns a [`RowIter`] that reads
//! one record at a time: each item is an [`ImportRow`] ready to append, or a
//! [`RowError`] naming the line, the column and what is wrong. Nothing here
//! touches the store; what exists in it comes in as [`Known`].
//!
//! Three formats:
//!
//! * `veto`: veto's own columns (see [`VETO_COLUMNS`]); every row says what
//!   happened (`action`).
//! * `listmonk`: listmonk's subscriber export. listmonk keeps no evidence of
//!   consent, so only what the export proves is imported: blocklisting and
//!   unsubscribes become withdrawals, and a grant needs a
//!   `subscription_status` of `confirmed` (double opt-in).
//! * `mailchimp`: Mailchimp's audience export, one file per status
//!   (subscribed, unsubscribed, cleaned).
//!
//! veto never invents consent: a row that does not prove a "yes" is an
//! error, never a grant.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;
use std::str::FromStr;

use csv::ByteRecord;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use veto_core::{
    Channel, EmailAddress, EventKind, JurisdictionSet, NewEvent, Relationship, RelationshipKind,
    Scope, Source, SubscriberType, TopicId, TopicKey, WordingId,
};

/// A record longer than this stops the import: it is almost always a quote
/// left open, which would otherwise swallow the rest of the file.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;
/// How far in the future an `at` may be (clock skew between machines).
const FUTURE_TOLERANCE: SignedDuration = SignedDuration::from_mins(5);
/// Longest name, `source`, `order_ref` or `product_group`, in characters.
const MAX_TEXT_CHARS: usize = 200;
/// Longest attribute key, in characters.
const MAX_ATTR_KEY_CHARS: usize = 64;
/// Lists of known topics or wordings longer than this are not spelled out.
const MAX_LISTED: usize = 20;

/// Which kind of file is being imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Veto,
    Listmonk,
    Mailchimp,
}

impl Format {
    pub const ALL: &'static [Format] = &[Format::Veto, Format::Listmonk, Format::Mailchimp];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Veto => "veto",
            Format::Listmonk => "listmonk",
            Format::Mailchimp => "mailchimp",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an import format; expected veto, listmonk or mailchimp")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Format::ALL
            .iter()
            .copied()
            .find(|f| t.eq_ignore_ascii_case(f.as_str()))
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

/// What exists in the store, for checking references in the file.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Topic key → id.
    pub topics: HashMap<String, TopicId>,
    /// Wording ids.
    pub wordings: HashSet<i64>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// `--topic`: the topic a listmonk or Mailchimp list is imported to.
    /// Required for those formats, refused for `veto` (which has a column).
    pub topic: Option<TopicKey>,
    /// The time of the import: the default `at`, and the reference for
    /// "in the future".
    pub now: Timestamp,
}

/// One valid row: a contact's details and one consent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// 1-based line in the file where the row starts (the header is line 1).
    pub line: u64,
    pub email: EmailAddress,
    pub name: Option<String>,
    /// E.164 (veto format's `phone` column), for calls and SMS.
    pub phone: Option<veto_core::PhoneNumber>,
    /// From `attr.<key>` columns (veto), the `attributes` JSON (listmonk),
    /// or merge fields (Mailchimp). Empty values are left out.
    pub attributes: BTreeMap<String, String>,
    /// Empty when not given.
    pub jurisdictions: JurisdictionSet,
    pub subscriber_type: Option<SubscriberType>,
    /// `source` is always [`Source::Import`].
    pub event: NewEvent,
    pub wording: Option<WordingId>,
    /// A valid IP address, in canonical form.
    pub ip: Option<String>,
    /// The `source` column: free text saying where the data came from.
    pub origin: Option<String>,
}

/// A row that cannot be imported. The rest of the file goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    /// The column as named in the header, when one column is at fault.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}, column {field:?}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for RowError {}

/// The file cannot be used at all; nothing in it is imported.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the file: {0}")]
    Io(#[from] io::Error),
    #[error("the file is empty: it needs a header row naming its columns")]
    Empty,
    #[error("the file is UTF-16 text; save it as \"CSV UTF-8\" and import that")]
    Utf16,
    #[error("line {line} is not UTF-8 text; is this a CSV file?")]
    NotText { line: u64 },
    #[error(
        "the header (line {line}) is longer than {MAX_RECORD_BYTES} bytes; is this a CSV file?"
    )]
    HeaderTooLong { line: u64 },
    #[error(
        "the header (line {line}) is one column {name:?}; veto reads comma-separated files (save as \"CSV UTF-8 (comma delimited)\")"
    )]
    NotCommaSeparated { line: u64, name: String },
    #[error("column {column} of the header (line {line}) has {reason}")]
    BadColumnName {
        line: u64,
        column: usize,
        reason: String,
    },
    #[error(
        "column {name:?} appears twice in the header (line {line}): columns {first} and {second}"
    )]
    DuplicateColumn {
        line: u64,
        name: String,
        first: usize,
        second: usize,
    },
    #[error("the header (line {line}) has no {name:?} column, which a {format} file needs")]
    MissingColumn {
        line: u64,
        name: &'static str,
        format: Format,
    },
    #[error(
        "column {column} of the header (line {line}), {name:?}, is not a veto column; expected one of {expected}, or attr.<key>"
    )]
    UnknownColumn {
        line: u64,
        column: usize,
        name: String,
        expected: String,
    },
    #[error("--topic is required for {0} imports: it names the topic the list is imported to")]
    TopicRequired(Format),
    #[error("--topic is not used with veto files: give each row's topic in a topic column")]
    TopicNotAllowed,
    #[error("--topic {key:?} is not a topic; {known}")]
    UnknownTopic { key: String, known: String },
}

/// Reads the header and returns an iterator over the rows.
///
/// Fails at once if the file cannot be used at all (see [`FileError`]).
/// Reading is streaming: memory does not grow with the number of rows.
pub fn read_rows<R: Read>(
    input: R,
    opts: &Options,
    known: &Known,
) -> Result<RowIter<R>, FileError> {
    let scope_topic = match (opts.format, &opts.topic) {
        (Format::Veto, Some(_)) => return Err(FileError::TopicNotAllowed),
        (Format::Veto, None) => None,
        (format, None) => return Err(FileError::TopicRequired(format)),
        (_, Some(key)) => match known.topics.get(key.as_str()) {
            Some(id) => Some(*id),
            None => {
                return Err(FileError::UnknownTopic {
                    key: key.as_str().to_owned(),
                    known: known_topics(&known.topics),
                });
            }
        },
    };

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(Input::new(input)?);
    let mut record = ByteRecord::new();
    let line = loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) if is_blank(&record) => continue,
            Ok(true) => break record_line(reader.position().line(), &record),
            Ok(false) => return Err(FileError::Empty),
            Err(e) => {
                let line = reader.position().line();
                return Err(match e.into_kind() {
                    _ if reader.get_ref().over_limit => FileError::HeaderTooLong { line },
                    csv::ErrorKind::Io(e) => FileError::Io(e),
                    other => FileError::Io(io::Error::other(format!("{other:?}"))),
                });
            }
        }
    };
    let names = header_names(&record, line)?;
    let parser = match opts.format {
        Format::Veto => Parser::Veto(VetoColumns::new(&names, line)?),
        Format::Listmonk => Parser::Listmonk(ListmonkColumns::new(&names, line)?),
        Format::Mailchimp => Parser::Mailchimp(MailchimpColumns::new(&names, line)?),
    };
    let byte = reader.position().byte();
    reader.get_mut().allow_record_after(byte);
    Ok(RowIter {
        reader,
        record,
        names,
        parser,
        ctx: Context {
            now: opts.now,
            topics: known.topics.clone(),
            wordings: known.wordings.clone(),
            scope_topic,
        },
        done: false,
        stopped: false,
    })
}

/// The rows of a file, in order. See [`read_rows`].
pub struct RowIter<R> {
    reader: csv::Reader<Input<R>>,
    record: ByteRecord,
    names: Vec<String>,
    parser: Parser,
    ctx: Context,
    done: bool,
    stopped: bool,
}

impl<R: Read> RowIter<R> {
    /// Bytes taken from the input so far, for a progress bar against the
    /// file's size. Runs a little ahead of the rows returned (buffering).
    pub fn bytes_read(&self) -> u64 {
        self.reader.get_ref().taken
    }

    /// True if reading stopped before the end of the file (a read error,
    /// or a record longer than [`MAX_RECORD_BYTES`]). The last item was a
    /// [`RowError`] saying so; the rows after it were not read.
    pub fn stopped_early(&self) -> bool {
        self.stopped
    }
}

impl<R: Read> Iterator for RowIter<R> {
    type Item = Result<ImportRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    self.stopped = true;
                    let line = self.reader.position().line();
                    let message = if self.reader.get_ref().over_limit {
                        format!(
                            "a record starting at or after this line is longer than {MAX_RECORD_BYTES} bytes \
                             (a quote left open?); reading stopped here"
                        )
                    } else {
                        match e.into_kind() {
                            csv::ErrorKind::Io(e) => {
                                format!("cannot read on: {e}; reading stopped here")
                            }
                            other => format!("cannot read on: {other:?}; reading stopped here"),
                        }
                    };
                    return Some(Err(RowError {
                        line,
                        field: None,
                        message,
                    }));
                }
            }
            let byte = self.reader.position().byte();
            self.reader.get_mut().allow_record_after(byte);
            if is_blank(&self.record) {
                continue;
            }
            let cells = Cells {
                record: &self.record,
                names: &self.names,
                line: record_line(self.reader.position().line(), &self.record),
            };
            if self.record.len() != self.names.len() {
                return Some(Err(RowError {
                    line: cells.line,
                    field: None,
                    message: format!(
                        "the row has {} fields but the header has {} (a comma too many or too few, or a quote not closed?)",
                        self.record.len(),
                        self.names.len()
                    ),
                }));
            }
            let row = match &self.parser {
                Parser::Veto(cols) => cols.row(&cells, &self.ctx),
                Parser::Listmonk(cols) => cols.row(&cells, &self.ctx),
                Parser::Mailchimp(cols) => cols.row(&cells, &self.ctx),
            };
            return Some(row);
        }
    }
}

impl<R: Read> std::iter::FusedIterator for RowIter<R> {}

// ---------------------------------------------------------------------------
// Input: what the CSV reader sees.
//
// * A UTF-8 BOM at the start is dropped.
// * Line breaks are normalised: `\r\n`, `\r` and `\n` each become one `\n`,
//   and a last line without a break gets one. Then the CSV reader's line
//   count is the file's, and a record's line is exact (see `record_line`).
//   Inside a quoted field this turns `\r\n` into `\n`, which no value here
//   minds.
// * One record may not run beyond `MAX_RECORD_BYTES` (a quote left open
//   would otherwise swallow the rest of the file into memory).
// * Bytes taken from the file are counted, for a progress bar.

struct Input<R> {
    inner: R,
    /// The first bytes of the file, minus a UTF-8 BOM, not yet handed on.
    head: [u8; 3],
    head_pos: usize,
    head_len: usize,
    /// Bytes taken from `inner`.
    taken: u64,
    /// Bytes handed to the CSV reader.
    given: u64,
    /// The CSV reader may not be given bytes beyond this offset.
    limit: u64,
    over_limit: bool,
    /// The last byte handed on was `\r` turned into `\n`: drop a `\n` next.
    after_cr: bool,
    /// The last byte handed on was a line break (or nothing was handed on).
    at_line_start: bool,
    /// `inner` is exhausted.
    eof: bool,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl<R: Read> Input<R> {
    fn new(mut inner: R) -> Result<Self, FileError> {
        let mut head = [0u8; 3];
        let mut len = 0;
        while len < head.len() {
            match inner.read(&mut head[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FileError::Io(e)),
            }
        }
        let taken = len as u64;
        let head_len = if head[..len] == *UTF8_BOM { 0 } else { len };
        let mut input = Input {
            inner,
            head,
            head_pos: 0,
            head_len,
            taken,
            given: 0,
            limit: 0,
            over_limit: false,
            after_cr: false,
            at_line_start: true,
            eof: false,
        };
        input.allow_record_after(0);
        Ok(input)
    }

    /// The CSV reader has consumed `byte` bytes: the next record may be up
    /// to [`MAX_RECORD_BYTES`] long (plus room for the reader's buffer).
    fn allow_record_after(&mut self, byte: u64) {
        const BUFFER_SLACK: u64 = 64 * 1024;
        self.limit = byte.saturating_add(MAX_RECORD_BYTES + BUFFER_SLACK);
    }

    /// Raw bytes: the saved head first, then the file.
    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head_pos < self.head_len {
            let n = (self.head_len - self.head_pos).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(n) => {
                    self.taken += n as u64;
                    return Ok(n);
                }
            }
        }
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.given >= self.limit {
            self.over_limit = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "record too long",
            ));
        }
        let room = usize::try_from(self.limit - self.given)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = &mut buf[..room];
        loop {
            if self.eof {
                return Ok(0);
            }
            let n = self.read_raw(buf)?;
            if n == 0 {
                self.eof = true;
                if self.at_line_start {
                    return Ok(0);
                }
                buf[0] = b'\n';
                self.at_line_start = true;
                self.given += 1;
                return Ok(1);
            }
            let mut w = 0;
            for r in 0..n {
                let b = buf[r];
                if std::mem::take(&mut self.after_cr) && b == b'\n' {
                    continue;
                }
                buf[w] = match b {
                    b'\r' => {
                        self.after_cr = true;
                        b'\n'
                    }
                    b => b,
                };
                w += 1;
            }
            if w > 0 {
                self.at_line_start = buf[w - 1] == b'\n';
                self.given += w as u64;
                return Ok(w);
            }
            // Only the `\n` of a `\r\n` split across reads: read on.
        }
    }
}

// ---------------------------------------------------------------------------
// Header.

/// The line a record starts on. The CSV reader's own start position counts
/// the blank lines it skipped before the record, so work back from where the
/// record ended instead: every record ends with a `\n` (see [`Input`]), after
/// which the reader is on the line below; line breaks inside quoted fields
/// are the record's other lines.
fn record_line(end_line: u64, record: &ByteRecord) -> u64 {
    let inside: usize = record
        .iter()
        .map(|f| f.iter().filter(|&&b| b == b'\n').count())
        .sum();
    end_line
        .saturating_sub(1)
        .saturating_sub(inside as u64)
        .max(1)
}

/// A record whose every field is empty or whitespace: a blank line, or a
/// spreadsheet's empty row (`,,,,`).
fn is_blank(record: &ByteRecord) -> bool {
    record
        .iter()
        .all(|f| f.iter().all(|b| b.is_ascii_whitespace()))
}

fn header_names(record: &ByteRecord, line: u64) -> Result<Vec<String>, FileError> {
    let first = record.get(0).unwrap_or_default();
    if first.starts_with(b"\xFF\xFE") || first.starts_with(b"\xFE\xFF") {
        return Err(FileError::Utf16);
    }
    let mut names = Vec::with_capacity(record.len());
    for field in record.iter() {
        let name = std::str::from_utf8(field).map_err(|_| FileError::NotText { line })?;
        if name.chars().any(|c| c.is_control() && c != '\t') {
            return Err(FileError::NotText { line });
        }
        names.push(name.trim().to_owned());
    }
    if let [only] = names.as_slice()
        && (only.contains(';') || only.contains('\t'))
    {
        return Err(FileError::NotCommaSeparated {
            line,
            name: only.clone(),
        });
    }
    Ok(names)
}

/// Refuses a name that appears twice, compared without regard to case.
fn check_duplicates<'a>(
    line: u64,
    names: impl Iterator<Item = (usize, &'a str)>,
) -> Result<(), FileError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, name) in names {
        if let Some(first) = seen.insert(name.to_lowercase(), i) {
            return Err(FileError::DuplicateColumn {
                line,
                name: name.to_owned(),
                first: first + 1,
                second: i + 1,
            });
        }
    }
    Ok(())
}

fn check_attr_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("an empty attribute key".to_owned());
    }
    if key.chars().count() > MAX_ATTR_KEY_CHARS {
        return Err(format!(
            "an attribute key longer than {MAX_ATTR_KEY_CHARS} characters"
        ));
    }
    Ok(())
}

enum Parser {
    Veto(VetoColumns),
    Listmonk(ListmonkColumns),
    Mailchimp(MailchimpColumns),
}

struct Context {
    now: Timestamp,
    topics: HashMap<String, TopicId>,
    wordings: HashSet<i64>,
    /// The `--topic`, for listmonk and Mailchimp.
    scope_topic: Option<TopicId>,
}

impl Context {
    /// Listmonk and Mailchimp rows are about the `--topic`.
    fn list_scope(&self) -> Scope {
        self.scope_topic.map_or(Scope::All, Scope::Topic)
    }
}

fn known_topics(topics: &HashMap<String, TopicId>) -> String {
    if topics.is_empty() {
        return "no topics are defined yet".to_owned();
    }
    if topics.len() > MAX_LISTED {
        return format!("{} topics are defined (see `veto topics`)", topics.len());
    }
    let mut keys: Vec<&str> = topics.keys().map(String::as_str).collect();
    keys.sort_unstable();
    format!("known topics: {}", keys.join(", "))
}

// ---------------------------------------------------------------------------
// Cells of one row.

struct Cells<'a> {
    record: &'a ByteRecord,
    names: &'a [String],
    line: u64,
}

impl<'a> Cells<'a> {
    fn error(&self, col: usize, message: impl Into<String>) -> RowError {
        RowError {
            line: self.line,
            field: self.names.get(col).cloned(),
            message: message.into(),
        }
    }

    fn row_error(&self, message: impl Into<String>) -> RowError {
        RowError {
            line: self.line,
            field: None,
            message: message.into(),
        }
    }

    /// The trimmed value of a column, `None` when the column is absent or
    /// the cell empty. Refuses bytes that are not UTF-8 and control
    /// characters other than tab and line breaks.
    fn get(&self, col: Option<usize>) -> Result<Option<Cell<'a>>, RowError> {
        let Some(col) = col else { return Ok(None) };
        let bytes = self.record.get(col).unwrap_or_default();
        let text = std::str::from_utf8(bytes)
            .map_err(|e| {
                self.error(
                    col,
                    format!(
                        "is not UTF-8 text (bad byte at position {})",
                        e.valid_up_to() + 1
                    ),
                )
            })?
            .trim();
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(self.error(col, format!("holds control character U+{:04X}", c as u32)));
        }
        Ok((!text.is_empty()).then_some(Cell { col, text }))
    }

    /// A one-line free text of at most [`MAX_TEXT_CHARS`] characters.
    fn line_text(&self, col: Option<usize>) -> Result<Option<String>, RowError> {
        let Some(cell) = self.get(col)? else {
            return Ok(None);
        };
        self.check_line_text(cell.col, cell.text)?;
        Ok(Some(cell.text.to_owned()))
    }

    fn check_line_text(&self, col: usize, text: &str) -> Result<(), RowError> {
        if text.contains(['\t', '\n', '\r']) {
            return Err(self.error(col, "must be one line, without tabs"));
        }
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(self.error(
                col,
                format!("is {chars} characters long; at most {MAX_TEXT_CHARS} are allowed"),
            ));
        }
        Ok(())
    }

    fn email(&self, col: Option<usize>) -> Result<EmailAddress, RowError> {
        let Some(cell) = self.get(col)? else {
            return Err(match col {
                Some(col) => self.error(col, "no address given"),
                None => self.row_error("no address given"),
            });
        };
        EmailAddress::parse(cell.text).map_err(|e| {
            self.error(
                cell.col,
                format!("{} is not a valid address: {e}", quote(cell.text)),
            )
        })
    }

    fn ip(&self, col: Option<usize>) -> Result<Option<String>, RowError> {
        let Some(cell) = self.get(col)? else {
            return Ok(None);
        };
        let ip: IpAddr = cell.text.parse().map_err(|_| {
            self.error(
                cell.col,
                format!("{} is not an IP address", quote(cell.text)),
            )
        })?;
        Ok(Some(ip.to_string()))
    }

    fn not_in_future(
        &self,
        col: usize,
        at: Timestamp,
        ctx: &Context,
    ) -> Result<Timestamp, RowError> {
        if at.duration_since(ctx.now) > FUTURE_TOLERANCE {
            return Err(self.error(
                col,
                format!("{at} is in the future (the import runs at {})", ctx.now),
            ));
        }
        Ok(at)
    }

    /// A time in one of the given syntaxes, not in the future.
    fn time(
        &self,
        col: Option<usize>,
        ctx: &Context,
        parse: fn(&str) -> Result<Timestamp, String>,
    ) -> Result<Option<Timestamp>, RowError> {
        let Some(cell) = self.get(col)? else {
            return Ok(None);
        };
        let at = parse(cell.text).map_err(|message| self.error(cell.col, message))?;
        self.not_in_future(cell.col, at, ctx).map(Some)
    }

    /// Adds an attribute, checking the value.
    fn attribute(
        &self,
        col: usize,
        attributes: &mut BTreeMap<String, String>,
        key: &str,
        value: &str,
    ) -> Result<(), RowError> {
        if let Some(c) = value
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(self.error(
                col,
                format!(
                    "attribute {key:?} holds control character U+{:04X}",
                    c as u32
                ),
            ));
        }
        if !value.is_empty() {
            attributes.insert(key.to_owned(), value.to_owned());
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Cell<'a> {
    col: usize,
    text: &'a str,
}

/// A value for a message: quoted, and cut short if long.
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

// ---------------------------------------------------------------------------
// Times.

/// RFC 3339 (veto format), e.g. `2026-03-12T10:00:00Z`.
fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    if s.parse::<jiff::civil::DateTime>().is_ok() {
        return Err(format!(
            "{} has no UTC offset; write it like 2026-03-12T10:00:00Z (UTC) or 2026-03-12T11:00:00+01:00",
            quote(s)
        ));
    }
    Err(format!(
        "{} is not an RFC 3339 time like 2026-03-12T10:00:00Z",
        quote(s)
    ))
}

/// listmonk writes Go's `time.Time.String()` (`2020-01-02 15:04:05.123456 +0000 UTC`);
/// a SQL export gives PostgreSQL's form (`2020-01-02 15:04:05.123456+00`).
fn parse_listmonk_time(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let mut parts = s.split_whitespace();
    if let (Some(date), Some(time), Some(offset)) = (parts.next(), parts.next(), parts.next())
        && offset.starts_with(['+', '-'])
        && let Ok(t) = format!("{date}T{time}{offset}").parse::<Timestamp>()
    {
        return Ok(t);
    }
    Err(format!(
        "{} is not a time like 2020-01-02 15:04:05 +0000 UTC or 2020-01-02T15:04:05Z",
        quote(s)
    ))
}

/// Mailchimp writes UTC times without an offset: `2023-04-05 10:11:12`.
fn parse_mailchimp_time(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| TimeZone::UTC.to_timestamp(dt).ok())
        .ok_or_else(|| format!("{} is not a time like 2023-04-05 10:11:12 (UTC)", quote(s)))
}

// ---------------------------------------------------------------------------
// veto format.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Email,
    Action,
    Topic,
    Channel,
    At,
    Source,
    Wording,
    Ip,
    Jurisdiction,
    SubscriberType,
    OrderRef,
    ProductGroup,
    OptOutOffered,
    Name,
    Phone,
}

/// The veto format's columns (besides `attr.<key>`).
pub const VETO_COLUMNS: &[&str] = &[
    "email",
    "action",
    "topic",
    "channel",
    "at",
    "source",
    "wording",
    "ip",
    "jurisdiction",
    "subscriber_type",
    "order_ref",
    "product_group",
    "opt_out_offered",
    "name",
    "phone",
];

struct VetoColumns {
    slots: [Option<usize>; VETO_COLUMNS.len()],
    attributes: Vec<(usize, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Grant,
    Withdraw,
    Object,
    Purchase,
    Negotiation,
    Inquiry,
    Refused,
    HardBounce,
    Complaint,
}

const ACTIONS: &[(&str, Action)] = &[
    ("grant", Action::Grant),
    ("withdraw", Action::Withdraw),
    ("object", Action::Object),
    ("purchase", Action::Purchase),
    ("negotiation", Action::Negotiation),
    ("inquiry", Action::Inquiry),
    ("refused", Action::Refused),
    ("hard_bounce", Action::HardBounce),
    ("complaint", Action::Complaint),
];
const ACTION_LIST: &str =
    "grant, withdraw, object, purchase, negotiation, inquiry, refused, hard_bounce, complaint";

impl Action {
    fn name(self) -> &'static str {
        ACTIONS
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }

    /// Why `topic` may not be given with this action, if it may not.
    fn topic_refused(self) -> Option<&'static str> {
        match self {
            Action::Grant | Action::Withdraw | Action::Refused => None,
            Action::Object => Some(
                "object is about all marketing; leave topic empty (to stop one topic, use withdraw)",
            ),
            Action::HardBounce | Action::Complaint => Some(
                "a hard_bounce or complaint is about the address on a channel, not a topic; leave topic empty",
            ),
            Action::Purchase | Action::Negotiation | Action::Inquiry => Some(
                "a purchase, negotiation or inquiry is matched to topics by product_group, not a topic; leave topic empty",
            ),
        }
    }

    /// Whether a `wording` (the text shown when collecting the address) applies.
    fn takes_wording(self) -> bool {
        matches!(
            self,
            Action::Grant
                | Action::Refused
                | Action::Purchase
                | Action::Negotiation
                | Action::Inquiry
        )
    }
}

impl VetoColumns {
    fn new(names: &[String], line: u64) -> Result<Self, FileError> {
        let mut slots = [None; VETO_COLUMNS.len()];
        let mut attributes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let lower = name.to_lowercase();
            if name.is_empty() {
                return Err(FileError::BadColumnName {
                    line,
                    column: i + 1,
                    reason: "no name".to_owned(),
                });
            }
            let attr_key = name
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("attr."))
                .and_then(|_| name.get(5..));
            if let Some(key) = attr_key {
                let key = key.trim();
                check_attr_key(key).map_err(|reason| FileError::BadColumnName {
                    line,
                    column: i + 1,
                    reason,
                })?;
                attributes.push((i, key.to_owned()));
            } else if let Some(k) = VETO_COLUMNS.iter().position(|c| *c == lower) {
                slots[k] = Some(i);
            } else {
                return Err(FileError::UnknownColumn {
                    line,
                    column: i + 1,
                    name: name.clone(),
                    expected: VETO_COLUMNS.join(", "),
                });
            }
        }
        // Duplicates: by column name, and by attribute key.
        check_duplicates(line, names.iter().enumerate().map(|(i, n)| (i, n.as_str())))?;
        check_duplicates(line, attributes.iter().map(|(i, k)| (*i, k.as_str())))?;
        let cols = VetoColumns { slots, attributes };
        for required in [Col::Email, Col::Action] {
            if cols.col(required).is_none() {
                return Err(FileError::MissingColumn {
                    line,
                    name: VETO_COLUMNS[required as usize],
                    format: Format::Veto,
                });
            }
        }
        Ok(cols)
    }

    fn col(&self, c: Col) -> Option<usize> {
        self.slots[c as usize]
    }

    /// A purchase, negotiation or inquiry with its evidence columns.
    fn relationship(&self, cells: &Cells, kind: RelationshipKind) -> Result<EventKind, RowError> {
        let order_ref = cells.line_text(self.col(Col::OrderRef))?;
        let product_group = cells.line_text(self.col(Col::ProductGroup))?;
        // The native format records a purchase where the opt-out was offered
        // and not taken (PECR reg 22(3)(c)); a taken one is a `refused` row.
        let opt_out_offered = match cells.get(self.col(Col::OptOutOffered))? {
            None => true,
            Some(cell) => parse_bool(cell.text).ok_or_else(|| {
                cells.error(
                    cell.col,
                    format!("{} is not true or false (or yes/no, 1/0)", quote(cell.text)),
                )
            })?,
        };
        Ok(EventKind::Relationship(Relationship {
            kind,
            product_group,
            order_ref,
            opt_out_offered,
        }))
    }

    fn row(&self, cells: &Cells, ctx: &Context) -> Result<ImportRow, RowError> {
        let email = cells.email(self.col(Col::Email))?;

        let Some(cell) = cells.get(self.col(Col::Action))? else {
            return Err(cells.error(
                self.col(Col::Action).unwrap_or_default(),
                format!("no action given; expected one of: {ACTION_LIST}"),
            ));
        };
        let action = ACTIONS
            .iter()
            .find(|(n, _)| cell.text.eq_ignore_ascii_case(n))
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                cells.error(
                    cell.col,
                    format!(
                        "{} is not an action; expected one of: {ACTION_LIST}",
                        quote(cell.text)
                    ),
                )
            })?;

        let scope = match cells.get(self.col(Col::Topic))? {
            None => Scope::All,
            Some(cell) => {
                if let Some(why) = action.topic_refused() {
                    return Err(cells.error(cell.col, why));
                }
                Scope::Topic(topic_id(cells, cell, &ctx.topics)?)
            }
        };

        let channel = match cells.get(self.col(Col::Channel))? {
            Some(cell) if action == Action::Object => {
                return Err(cells.error(
                    cell.col,
                    "object applies to every channel; leave channel empty (to stop one channel, use withdraw)",
                ));
            }
            Some(cell) => Some(
                cell.text
                    .parse::<Channel>()
                    .map_err(|e| cells.error(cell.col, e.to_string()))?,
            ),
            None if action == Action::Object => None,
            None => Some(Channel::Email),
        };

        let at = cells
            .time(self.col(Col::At), ctx, parse_rfc3339)?
            .unwrap_or(ctx.now);

        let origin = cells.line_text(self.col(Col::Source))?;

        let wording = match cells.get(self.col(Col::Wording))? {
            None => None,
            Some(cell) if !action.takes_wording() => {
                return Err(cells.error(
                    cell.col,
                    format!(
                        "a wording applies to grant, refused, purchase, negotiation and inquiry rows; this row is {}",
                        action.name()
                    ),
                ));
            }
            Some(cell) => Some(wording_id(cells, cell, &ctx.wordings)?),
        };

        let ip = cells.ip(self.col(Col::Ip))?;

        let jurisdictions = match cells.get(self.col(Col::Jurisdiction))? {
            None => JurisdictionSet::EMPTY,
            Some(cell) => JurisdictionSet::parse_list(cell.text)
                .map_err(|e| cells.error(cell.col, e.to_string()))?,
        };

        let subscriber_type = match cells.get(self.col(Col::SubscriberType))? {
            None => None,
            Some(cell) => Some(
                cell.text
                    .parse::<SubscriberType>()
                    .map_err(|e| cells.error(cell.col, e.to_string()))?,
            ),
        };

        let kind = match action {
            Action::Grant => EventKind::Grant,
            Action::Withdraw => EventKind::Withdraw,
            Action::Object => EventKind::Object,
            Action::Refused => EventKind::Refused,
            Action::HardBounce => EventKind::HardBounce,
            Action::Complaint => EventKind::Complaint,
            Action::Purchase => self.relationship(cells, RelationshipKind::Purchase)?,
            Action::Negotiation => self.relationship(cells, RelationshipKind::Negotiation)?,
            Action::Inquiry => self.relationship(cells, RelationshipKind::Inquiry)?,
        };
        if !matches!(kind, EventKind::Relationship(_)) {
            for c in [Col::OrderRef, Col::ProductGroup, Col::OptOutOffered] {
                if let Some(cell) = cells.get(self.col(c))? {
                    return Err(cells.error(
                        cell.col,
                        format!(
                            "applies only to purchase, negotiation and inquiry rows; this row is {}",
                            action.name()
                        ),
                    ));
                }
            }
        }

        let name = cells.line_text(self.col(Col::Name))?;
        let phone = match cells.get(self.col(Col::Phone))? {
            Some(cell) => Some(
                veto_core::PhoneNumber::parse(cell.text)
                    .map_err(|e| cells.error(cell.col, e.to_string()))?,
            ),
            None => None,
        };

        let mut attributes = BTreeMap::new();
        for (col, key) in &self.attributes {
            if let Some(cell) = cells.get(Some(*col))? {
                cells.attribute(*col, &mut attributes, key, cell.text)?;
            }
        }

        Ok(ImportRow {
            line: cells.line,
            email,
            name,
            phone,
            attributes,
            jurisdictions,
            subscriber_type,
            event: NewEvent {
                kind,
                scope,
                channel,
                source: Source::Import,
                at,
            },
            wording,
            ip,
            origin,
        })
    }
}

fn topic_id(
    cells: &Cells,
    cell: Cell,
    topics: &HashMap<String, TopicId>,
) -> Result<TopicId, RowError> {
    if let Some(id) = topics.get(cell.text) {
        return Ok(*id);
    }
    let lower = cell.text.to_lowercase();
    if topics.contains_key(&lower) {
        return Err(cells.error(
            cell.col,
            format!(
                "unknown topic {}; topic keys are lower case: {lower:?}",
                quote(cell.text)
            ),
        ));
    }
    Err(cells.error(
        cell.col,
        format!(
            "unknown topic {}; {}",
            quote(cell.text),
            known_topics(topics)
        ),
    ))
}

fn wording_id(cells: &Cells, cell: Cell, wordings: &HashSet<i64>) -> Result<WordingId, RowError> {
    let id: i64 = cell.text.parse().map_err(|_| {
        cells.error(
            cell.col,
            format!("{} is not a wording number", quote(cell.text)),
        )
    })?;
    if wordings.contains(&id) {
        return Ok(WordingId(id));
    }
    let known = if wordings.is_empty() {
        "no wordings are defined yet".to_owned()
    } else if wordings.len() > MAX_LISTED {
        format!("{} wordings are defined", wordings.len())
    } else {
        let mut ids: Vec<i64> = wordings.iter().copied().collect();
        ids.sort_unstable();
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        format!("known wordings: {}", ids.join(", "))
    };
    Err(cells.error(cell.col, format!("wording {id} does not exist; {known}")))
}

fn parse_bool(s: &str) -> Option<bool> {
    const TRUE: &[&str] = &["true", "yes", "1", "y", "t"];
    const FALSE: &[&str] = &["false", "no", "0", "n", "f"];
    if TRUE.iter().any(|t| s.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| s.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// listmonk format.

struct ListmonkColumns {
    email: Option<usize>,
    name: Option<usize>,
    attributes: Option<usize>,
    status: Option<usize>,
    subscription_status: Option<usize>,
    created_at: Option<usize>,
    updated_at: Option<usize>,
}

impl ListmonkColumns {
    fn new(names: &[String], line: u64) -> Result<Self, FileError> {
        const USED: &[&str] = &[
            "email",
            "name",
            "attributes",
            "status",
            "subscription_status",
            "created_at",
            "updated_at",
        ];
        let find = |want: &str| names.iter().position(|n| n.eq_ignore_ascii_case(want));
        check_duplicates(
            line,
            names
                .iter()
                .enumerate()
                .filter(|(_, n)| USED.iter().any(|u| n.eq_ignore_ascii_case(u)))
                .map(|(i, n)| (i, n.as_str())),
        )?;
        let cols = ListmonkColumns {
            email: find("email"),
            name: find("name"),
            attributes: find("attributes"),
            status: find("status"),
            subscription_status: find("subscription_status"),
            created_at: find("created_at"),
            updated_at: find("updated_at"),
        };
        for (name, col) in [("email", cols.email), ("status", cols.status)] {
            if col.is_none() {
                return Err(FileError::MissingColumn {
                    line,
                    name,
                    format: Format::Listmonk,
                });
            }
        }
        Ok(cols)
    }

    fn row(&self, cells: &Cells, ctx: &Context) -> Result<ImportRow, RowError> {
        let email = cells.email(self.email)?;
        let name = cells.line_text(self.name)?;

        let mut attributes = BTreeMap::new();
        if let Some(cell) = cells.get(self.attributes)? {
            let value: serde_json::Value = serde_json::from_str(cell.text)
                .map_err(|e| cells.error(cell.col, format!("is not JSON: {e}")))?;
            match value {
                serde_json::Value::Object(map) => {
                    for (key, value) in map {
                        let key = key.trim();
                        let text = match value {
                            serde_json::Value::String(s) => s.trim().to_owned(),
                            serde_json::Value::Number(n) => n.to_string(),
                            serde_json::Value::Bool(b) => b.to_string(),
                            // Nested objects, lists and nulls have no place in a flat map.
                            _ => continue,
                        };
                        if let Err(why) = check_attr_key(key) {
                            return Err(cells
                                .error(cell.col, format!("attribute key {}: {why}", quote(key))));
                        }
                        cells.attribute(cell.col, &mut attributes, key, &text)?;
                    }
                }
                serde_json::Value::Null => {}
                _ => return Err(cells.error(cell.col, "is not a JSON object")),
            }
        }

        let status_cell = cells.get(self.status)?;
        let status = status_cell.map(|c| c.text.to_ascii_lowercase());
        let subscription = cells.get(self.subscription_status)?;
        let status_col = self.status.unwrap_or_default();

        let (kind, scope, at) = match status.as_deref() {
            Some("blocklisted") => {
                // Blocklisted: listmonk sends nothing to the address on any list.
                (
                    EventKind::Withdraw,
                    Scope::All,
                    self.withdrawal_time(cells, ctx)?,
                )
            }
            Some("enabled") | Some("disabled") => {
                let Some(sub) = subscription else {
                    return Err(cells.error(
                        status_col,
                        format!(
                            "status {} is no evidence of consent (listmonk records none); export with a \
                             subscription_status column, or write a veto file saying how consent was given",
                            status.as_deref().unwrap_or_default()
                        ),
                    ));
                };
                match sub.text.to_ascii_lowercase().as_str() {
                    "unsubscribed" => (
                        EventKind::Withdraw,
                        ctx.list_scope(),
                        self.withdrawal_time(cells, ctx)?,
                    ),
                    "confirmed" if status.as_deref() == Some("disabled") => {
                        return Err(cells.error(
                            status_col,
                            "the subscriber is disabled in listmonk; veto has no such state, so nothing is imported \
                             (write a veto file with the action you mean)",
                        ));
                    }
                    "confirmed" => {
                        let Some(at) = cells.time(self.created_at, ctx, parse_listmonk_time)?
                        else {
                            return Err(match self.created_at {
                                Some(col) => cells.error(
                                    col,
                                    "a confirmed subscription needs the time it was created",
                                ),
                                None => cells.row_error(
                                    "a confirmed subscription needs a created_at column",
                                ),
                            });
                        };
                        (EventKind::Grant, ctx.list_scope(), at)
                    }
                    "unconfirmed" => {
                        return Err(cells.error(
                            sub.col,
                            "unconfirmed subscription: no consent to import (the double opt-in was not confirmed)",
                        ));
                    }
                    other => {
                        return Err(cells.error(
                            sub.col,
                            format!("{} is not a subscription status; expected unconfirmed, confirmed or unsubscribed", quote(other)),
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(cells.error(
                    status_col,
                    format!(
                        "{} is not a listmonk status; expected enabled, disabled or blocklisted",
                        quote(other)
                    ),
                ));
            }
            None => return Err(cells.error(status_col, "no status given")),
        };

        Ok(ImportRow {
            line: cells.line,
            email,
            name,
            phone: None,
            attributes,
            jurisdictions: JurisdictionSet::EMPTY,
            subscriber_type: None,
            event: NewEvent {
                kind,
                scope,
                channel: Some(Channel::Email),
                source: Source::Import,
                at,
            },
            wording: None,
            ip: None,
            origin: None,
        })
    }

    /// listmonk keeps no time of an unsubscribe or a blocklisting; its
    /// `updated_at` (last change to the subscriber) is the nearest it has.
    /// Without it, the import's own time: a "no" is never backdated on a guess.
    fn withdrawal_time(&self, cells: &Cells, ctx: &Context) -> Result<Timestamp, RowError> {
        Ok(cells
            .time(self.updated_at, ctx, parse_listmonk_time)?
            .unwrap_or(ctx.now))
    }
}

// ---------------------------------------------------------------------------
// Mailchimp format.

/// Mailchimp's own bookkeeping columns: about the list, not the person.
const MAILCHIMP_IGNORED: &[&str] = &[
    "member_rating",
    "latitude",
    "longitude",
    "gmtoff",
    "dstoff",
    "timezone",
    "cc",
    "region",
    "leid",
    "euid",
    "notes",
    "tags",
    "last_changed",
    "unsub_campaign_title",
    "unsub_campaign_id",
    "unsub_reason",
    "unsub_reason_other",
    "clean_campaign_title",
    "clean_campaign_id",
];

struct MailchimpColumns {
    email: Option<usize>,
    first_name: Option<usize>,
    last_name: Option<usize>,
    optin_time: Option<usize>,
    optin_ip: Option<usize>,
    confirm_time: Option<usize>,
    confirm_ip: Option<usize>,
    unsub_time: Option<usize>,
    clean_time: Option<usize>,
    last_changed: Option<usize>,
    /// Merge fields and other columns: (column, attribute key).
    attributes: Vec<(usize, String)>,
}

impl MailchimpColumns {
    fn new(names: &[String], line: u64) -> Result<Self, FileError> {
        const USED: &[&str] = &[
            "email address",
            "first name",
            "last name",
            "optin_time",
            "optin_ip",
            "confirm_time",
            "confirm_ip",
            "unsub_time",
            "clean_time",
        ];
        let mut attributes = Vec::new();
        let mut checked = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let lower = name.to_lowercase();
            if USED.contains(&lower.as_str()) {
                checked.push((i, lower));
            } else if !name.is_empty() && !MAILCHIMP_IGNORED.contains(&lower.as_str()) {
                let key = lower.split_whitespace().collect::<Vec<_>>().join("_");
                check_attr_key(&key).map_err(|reason| FileError::BadColumnName {
                    line,
                    column: i + 1,
                    reason,
                })?;
                checked.push((i, key.clone()));
                attributes.push((i, key));
            }
        }
        check_duplicates(line, checked.iter().map(|(i, n)| (*i, n.as_str())))?;
        let find = |want: &str| names.iter().position(|n| n.eq_ignore_ascii_case(want));
        let cols = MailchimpColumns {
            email: find("email address"),
            first_name: find("first name"),
            last_name: find("last name"),
            optin_time: find("optin_time"),
            optin_ip: find("optin_ip"),
            confirm_time: find("confirm_time"),
            confirm_ip: find("confirm_ip"),
            unsub_time: find("unsub_time"),
            clean_time: find("clean_time"),
            last_changed: find("last_changed"),
            attributes,
        };
        if cols.email.is_none() {
            return Err(FileError::MissingColumn {
                line,
                name: "Email Address",
                format: Format::Mailchimp,
            });
        }
        Ok(cols)
    }

    fn row(&self, cells: &Cells, ctx: &Context) -> Result<ImportRow, RowError> {
        let email = cells.email(self.email)?;

        let first = cells.line_text(self.first_name)?;
        let last = cells.line_text(self.last_name)?;
        let name = match (first, last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (f, l) => f.or(l),
        };
        if let (Some(n), Some(col)) = (&name, self.first_name.or(self.last_name)) {
            cells.check_line_text(col, n)?;
        }

        let mut attributes = BTreeMap::new();
        for (col, key) in &self.attributes {
            if let Some(cell) = cells.get(Some(*col))? {
                cells.attribute(*col, &mut attributes, key, cell.text)?;
            }
        }

        // Mailchimp exports one file per status: the columns say which.
        let unsub = cells.time(self.unsub_time, ctx, parse_mailchimp_time)?;
        let clean = cells.time(self.clean_time, ctx, parse_mailchimp_time)?;
        let mut ip = None;
        let (kind, scope, at) = match (self.unsub_time.is_some(), self.clean_time.is_some()) {
            // Both columns (files joined together): the row's values decide.
            (true, true) => match (unsub, clean) {
                (Some(at), _) => (EventKind::Withdraw, ctx.list_scope(), at),
                (None, Some(at)) => (EventKind::HardBounce, Scope::All, at),
                (None, None) => {
                    return Err(cells.row_error(
                        "the file has UNSUB_TIME and CLEAN_TIME columns and this row has neither: \
                         cannot tell whether the person is subscribed, so nothing is imported",
                    ));
                }
            },
            (true, false) => (
                EventKind::Withdraw,
                ctx.list_scope(),
                self.fallback_time(unsub, cells, ctx)?,
            ),
            (false, true) => (
                EventKind::HardBounce,
                Scope::All,
                self.fallback_time(clean, cells, ctx)?,
            ),
            (false, false) => {
                let confirmed = cells.time(self.confirm_time, ctx, parse_mailchimp_time)?;
                let opted_in = cells.time(self.optin_time, ctx, parse_mailchimp_time)?;
                let Some(at) = confirmed.or(opted_in) else {
                    return Err(cells.row_error(
                        "a subscribed member with no CONFIRM_TIME or OPTIN_TIME: no evidence of when \
                         consent was given, so nothing is imported",
                    ));
                };
                ip = match cells.ip(self.confirm_ip)? {
                    Some(ip) => Some(ip),
                    None => cells.ip(self.optin_ip)?,
                };
                (EventKind::Grant, ctx.list_scope(), at)
            }
        };

        Ok(ImportRow {
            line: cells.line,
            email,
            name,
            phone: None,
            attributes,
            jurisdictions: JurisdictionSet::EMPTY,
            subscriber_type: None,
            event: NewEvent {
                kind,
                scope,
                channel: Some(Channel::Email),
                source: Source::Import,
                at,
            },
            wording: None,
            ip,
            origin: None,
        })
    }

    /// An unsubscribe or clean without its own time: LAST_CHANGED, else the
    /// import's own time (a "no" is never backdated on a guess).
    fn fallback_time(
        &self,
        own: Option<Timestamp>,
        cells: &Cells,
        ctx: &Context,
    ) -> Result<Timestamp, RowError> {
        if let Some(at) = own {
            return Ok(at);
        }
        Ok(cells
            .time(self.last_changed, ctx, parse_mailchimp_time)?
            .unwrap_or(ctx.now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-03-12T10:00:00Z".parse().unwrap()
    }

    fn known() -> Known {
        Known {
            topics: [
                ("news".to_owned(), TopicId(1)),
                ("offers".to_owned(), TopicId(2)),
            ]
            .into(),
            wordings: [7, 8].into(),
        }
    }

    fn opts(format: Format, topic: Option<&str>) -> Options {
        Options {
            format,
            topic: topic.map(|t| TopicKey::parse(t).unwrap()),
            now: now(),
        }
    }

    fn veto(csv: &str) -> Vec<Result<ImportRow, RowError>> {
        read_rows(csv.as_bytes(), &opts(Format::Veto, None), &known())
            .unwrap()
            .collect()
    }

    fn veto_file_error(csv: &str) -> FileError {
        match read_rows(csv.as_bytes(), &opts(Format::Veto, None), &known()) {
            Ok(_) => panic!("expected a file error for {csv:?}"),
            Err(e) => e,
        }
    }

    fn one(csv: &str) -> ImportRow {
        let mut rows = veto(csv);
        assert_eq!(rows.len(), 1, "{rows:?}");
        match rows.remove(0) {
            Ok(row) => row,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn one_error(csv: &str) -> RowError {
        let mut rows = veto(csv);
        assert_eq!(rows.len(), 1, "{rows:?}");
        match rows.remove(0) {
            Ok(row) => panic!("expected an error, got {row:?}"),
            Err(e) => e,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn format_from_str() {
        assert_eq!("Listmonk".parse::<Format>().unwrap(), Format::Listmonk);
        assert_eq!(" veto ".parse::<Format>().unwrap(), Format::Veto);
        let e = "csv".parse::<Format>().unwrap_err().to_string();
        assert_eq!(
            e,
            "\"csv\" is not an import format; expected veto, listmonk or mailchimp"
        );
    }

    #[test]
    fn grant_with_everything() {
        let row = one(
            "email,topic,channel,action,at,source,wording,ip,jurisdiction,subscriber_type,name,attr.plan,attr.City\n\
             Jo@Example.com,news,email,grant,2026-01-02T03:04:05Z,signup form 2025,7,192.0.2.1,UK|eu,individual,Jo Bloggs,gold,Leeds\n",
        );
        assert_eq!(row.line, 2);
        assert_eq!(row.email.as_str(), "Jo@example.com");
        assert_eq!(row.name.as_deref(), Some("Jo Bloggs"));
        assert_eq!(row.attributes.get("plan").map(String::as_str), Some("gold"));
        assert_eq!(
            row.attributes.get("City").map(String::as_str),
            Some("Leeds")
        );
        assert_eq!(row.jurisdictions.to_pipe_list(), "UK|EU");
        assert_eq!(row.subscriber_type, Some(SubscriberType::Individual));
        assert_eq!(
            row.event,
            NewEvent {
                kind: EventKind::Grant,
                scope: Scope::Topic(TopicId(1)),
                channel: Some(Channel::Email),
                source: Source::Import,
                at: ts("2026-01-02T03:04:05Z"),
            }
        );
        assert_eq!(row.wording, Some(WordingId(7)));
        assert_eq!(row.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(row.origin.as_deref(), Some("signup form 2025"));
    }

    #[test]
    fn defaults() {
        let row = one("email,action\njo@example.com,grant\n");
        assert_eq!(row.event.scope, Scope::All);
        assert_eq!(row.event.channel, Some(Channel::Email));
        assert_eq!(row.event.at, now());
        assert_eq!(row.event.source, Source::Import);
        assert!(row.jurisdictions.is_empty());
        assert_eq!(row.subscriber_type, None);
        assert_eq!(row.wording, None);
        assert_eq!(row.ip, None);
        assert_eq!(row.origin, None);
        assert_eq!(row.name, None);
        assert!(row.attributes.is_empty());
        // Empty cells are "not given" too.
        let row = one("email,action,topic,channel,at,ip,attr.x\njo@example.com,withdraw,,,,,\n");
        assert_eq!(row.event.scope, Scope::All);
        assert_eq!(row.event.channel, Some(Channel::Email));
        assert_eq!(row.event.at, now());
        assert!(row.attributes.is_empty());
    }

    #[test]
    fn each_action() {
        let cases: &[(&str, EventKind, Scope, Option<Channel>)] = &[
            (
                "grant,news,sms",
                EventKind::Grant,
                Scope::Topic(TopicId(1)),
                Some(Channel::Sms),
            ),
            (
                "WITHDRAW,offers,",
                EventKind::Withdraw,
                Scope::Topic(TopicId(2)),
                Some(Channel::Email),
            ),
            ("object,,", EventKind::Object, Scope::All, None),
            (
                "refused,news,post",
                EventKind::Refused,
                Scope::Topic(TopicId(1)),
                Some(Channel::Post),
            ),
            (
                "hard_bounce,,",
                EventKind::HardBounce,
                Scope::All,
                Some(Channel::Email),
            ),
            (
                "Complaint,,email",
                EventKind::Complaint,
                Scope::All,
                Some(Channel::Email),
            ),
        ];
        for (cells, kind, scope, channel) in cases {
            let row = one(&format!(
                "email,action,topic,channel\njo@example.com,{cells}\n"
            ));
            assert_eq!(&row.event.kind, kind, "{cells}");
            assert_eq!(&row.event.scope, scope, "{cells}");
            assert_eq!(&row.event.channel, channel, "{cells}");
        }
    }

    #[test]
    fn relationships() {
        let csv = "email,action,order_ref,product_group,opt_out_offered,wording\n\
                   a@example.com,purchase,ORD-1,garden,,7\n\
                   b@example.com,negotiation,Q-2,,no,\n\
                   c@example.com,inquiry,,,YES,\n";
        let rows: Vec<ImportRow> = veto(csv).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            rows[0].event.kind,
            EventKind::Relationship(Relationship {
                kind: RelationshipKind::Purchase,
                product_group: Some("garden".into()),
                order_ref: Some("ORD-1".into()),
                opt_out_offered: true,
            })
        );
        assert_eq!(rows[0].wording, Some(WordingId(7)));
        assert_eq!(rows[0].event.scope, Scope::All);
        assert_eq!(
            rows[1].event.kind,
            EventKind::Relationship(Relationship {
                kind: RelationshipKind::Negotiation,
                product_group: None,
                order_ref: Some("Q-2".into()),
                opt_out_offered: false,
            })
        );
        assert!(matches!(
            &rows[2].event.kind,
            EventKind::Relationship(Relationship {
                kind: RelationshipKind::Inquiry,
                opt_out_offered: true,
                ..
            })
        ));
        let e = one_error("email,action,opt_out_offered\na@example.com,purchase,maybe\n");
        assert_eq!(e.field.as_deref(), Some("opt_out_offered"));
    }

    #[test]
    fn columns_that_do_not_apply_are_errors() {
        let e = one_error("email,action,topic\njo@example.com,object,news\n");
        assert_eq!((e.line, e.field.as_deref()), (2, Some("topic")));
        assert!(e.message.contains("all marketing"), "{e}");
        let e = one_error("email,action,channel\njo@example.com,object,email\n");
        assert_eq!(e.field.as_deref(), Some("channel"));
        let e = one_error("email,action,topic\njo@example.com,hard_bounce,news\n");
        assert_eq!(e.field.as_deref(), Some("topic"));
        let e = one_error("email,action,topic\njo@example.com,purchase,news\n");
        assert!(e.message.contains("product_group"), "{e}");
        let e = one_error("email,action,product_group\njo@example.com,withdraw,garden\n");
        assert_eq!(
            e.to_string(),
            "line 2, column \"product_group\": applies only to purchase, negotiation and inquiry rows; this row is withdraw"
        );
        let e = one_error("email,action,wording\njo@example.com,withdraw,7\n");
        assert_eq!(e.field.as_deref(), Some("wording"));
    }

    #[test]
    fn any_column_order_and_case() {
        let a = one("email,action,topic,at\njo@example.com,grant,news,2026-01-01T00:00:00Z\n");
        let b = one("AT, Topic ,Action,Email\n2026-01-01T00:00:00Z,news,grant,jo@example.com\n");
        assert_eq!(a.event, b.event);
        assert_eq!(a.email, b.email);
    }

    #[test]
    fn values_are_trimmed_and_quoted_fields_work() {
        let row = one("email,action,name\n  jo@example.com , grant ,\"Bloggs, Jo\"\n");
        assert_eq!(row.email.as_str(), "jo@example.com");
        assert_eq!(row.name.as_deref(), Some("Bloggs, Jo"));
    }

    #[test]
    fn unknown_topic_lists_the_known_ones() {
        let e = one_error("email,action,topic\njo@example.com,grant,newz\n");
        assert_eq!(
            e.to_string(),
            "line 2, column \"topic\": unknown topic \"newz\"; known topics: news, offers"
        );
        let e = one_error("email,action,topic\njo@example.com,grant,News\n");
        assert!(e.message.contains("lower case"), "{e}");
    }

    #[test]
    fn unknown_wording() {
        let e = one_error("email,action,wording\njo@example.com,grant,9\n");
        assert_eq!(e.message, "wording 9 does not exist; known wordings: 7, 8");
        let e = one_error("email,action,wording\njo@example.com,grant,v7\n");
        assert!(e.message.contains("not a wording number"), "{e}");
    }

    #[test]
    fn bad_email_says_line_field_and_why() {
        let rows = veto("email,action\njo@example.com,grant\njo b@example.com,grant\n,grant\n");
        assert!(rows[0].is_ok());
        let e = rows[1].clone().unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (3, Some("email")));
        assert!(
            e.message
                .contains("\"jo b@example.com\" is not a valid address"),
            "{e}"
        );
        assert!(e.message.contains("' '"), "{e}");
        let e = rows[2].clone().unwrap_err();
        assert_eq!(e.to_string(), "line 4, column \"email\": no address given");
    }

    #[test]
    fn bad_values() {
        let cases: &[(&str, &str, &str)] = &[
            ("action", "subscribe", "is not an action"),
            ("channel", "fax", "is not a channel"),
            ("jurisdiction", "UK|FR", "is not a jurisdiction"),
            ("subscriber_type", "company", "is not a subscriber type"),
            ("ip", "1.2.3.999", "is not an IP address"),
        ];
        for (col, value, want) in cases {
            let csv = if *col == "action" {
                format!("email,action\njo@example.com,{value}\n")
            } else {
                format!("email,action,{col}\njo@example.com,grant,{value}\n")
            };
            let e = one_error(&csv);
            assert_eq!(e.field.as_deref(), Some(*col), "{e}");
            assert!(e.message.contains(want), "{e}");
        }
        let e = one_error("email,action\njo@example.com,\n");
        assert!(e.message.starts_with("no action given"), "{e}");
        let ip = one("email,action,ip\njo@example.com,grant,2001:DB8::1\n").ip;
        assert_eq!(ip.as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn bad_date() {
        let e = one_error("email,action,at\njo@example.com,grant,yesterday\n");
        assert_eq!(
            e.to_string(),
            "line 2, column \"at\": \"yesterday\" is not an RFC 3339 time like 2026-03-12T10:00:00Z"
        );
        let e = one_error("email,action,at\njo@example.com,grant,2026-03-01T10:00:00\n");
        assert!(e.message.contains("no UTC offset"), "{e}");
        // An offset is fine.
        let row = one("email,action,at\njo@example.com,grant,2026-03-01T11:00:00+01:00\n");
        assert_eq!(row.event.at, ts("2026-03-01T10:00:00Z"));
    }

    #[test]
    fn future_date() {
        let e = one_error("email,action,at\njo@example.com,grant,2026-03-12T10:06:00Z\n");
        assert_eq!(e.field.as_deref(), Some("at"));
        assert!(e.message.contains("in the future"), "{e}");
        // Within five minutes: clock skew, accepted.
        let row = one("email,action,at\njo@example.com,grant,2026-03-12T10:04:00Z\n");
        assert_eq!(row.event.at, ts("2026-03-12T10:04:00Z"));
    }

    #[test]
    fn source_is_exposed_as_origin() {
        let e = one_error(&format!(
            "email,action,source\njo@example.com,grant,{}\n",
            "x".repeat(201)
        ));
        assert_eq!(e.field.as_deref(), Some("source"));
        assert!(e.message.contains("at most 200"), "{e}");
        let row = one("email,action,source\njo@example.com,grant,CRM export 2026-02\n");
        assert_eq!(row.origin.as_deref(), Some("CRM export 2026-02"));
    }

    #[test]
    fn header_problems_are_file_errors() {
        let e = veto_file_error("email,action,email\n");
        assert!(
            matches!(
                e,
                FileError::DuplicateColumn {
                    first: 1,
                    second: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "column \"email\" appears twice in the header (line 1): columns 1 and 3"
        );
        let e = veto_file_error("email,action,attr.x,attr.x\n");
        assert!(matches!(e, FileError::DuplicateColumn { .. }), "{e:?}");

        let e = veto_file_error("email,action,chanel\n");
        assert!(
            matches!(&e, FileError::UnknownColumn { column: 3, name, .. } if name == "chanel"),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("\"chanel\", is not a veto column"),
            "{e}"
        );

        let e = veto_file_error("e-mail,action\njo@example.com,grant\n");
        assert!(matches!(e, FileError::UnknownColumn { .. }), "{e:?}");
        let e = veto_file_error("action,topic\ngrant,news\n");
        assert!(
            matches!(e, FileError::MissingColumn { name: "email", .. }),
            "{e:?}"
        );
        let e = veto_file_error("email\njo@example.com\n");
        assert!(
            matches!(e, FileError::MissingColumn { name: "action", .. }),
            "{e:?}"
        );
        let e = veto_file_error("email,action,\n");
        assert!(
            matches!(e, FileError::BadColumnName { column: 3, .. }),
            "{e:?}"
        );
        let e = veto_file_error("email,action,attr.\n");
        assert!(
            matches!(e, FileError::BadColumnName { column: 3, .. }),
            "{e:?}"
        );

        assert!(matches!(veto_file_error(""), FileError::Empty));
        assert!(matches!(veto_file_error("\n\n  \n"), FileError::Empty));
        assert!(matches!(veto_file_error("\u{feff}"), FileError::Empty));
        let e = veto_file_error("email;action\njo@example.com;grant\n");
        assert!(matches!(e, FileError::NotCommaSeparated { .. }), "{e:?}");
    }

    #[test]
    fn a_header_without_end_is_refused() {
        let csv = "email".repeat(MAX_RECORD_BYTES as usize / 2);
        let e = veto_file_error(&csv);
        assert!(matches!(e, FileError::HeaderTooLong { line: 1 }), "{e:?}");
    }

    #[test]
    fn binary_and_utf16_files_are_refused() {
        let binary: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0";
        let e = read_rows(binary, &opts(Format::Veto, None), &known())
            .err()
            .unwrap();
        assert!(matches!(e, FileError::NotText { line: 1 }), "{e:?}");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("email,action\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let e = read_rows(utf16.as_slice(), &opts(Format::Veto, None), &known())
            .err()
            .unwrap();
        assert!(matches!(e, FileError::Utf16), "{e:?}");
    }

    #[test]
    fn topic_option_rules() {
        let e = read_rows(
            &b"email,action\n"[..],
            &opts(Format::Veto, Some("news")),
            &known(),
        )
        .err()
        .unwrap();
        assert!(matches!(e, FileError::TopicNotAllowed));
        let e = read_rows(
            &b"email,status\n"[..],
            &opts(Format::Listmonk, None),
            &known(),
        )
        .err()
        .unwrap();
        assert!(matches!(e, FileError::TopicRequired(Format::Listmonk)));
        assert_eq!(
            e.to_string(),
            "--topic is required for listmonk imports: it names the topic the list is imported to"
        );
        let e = read_rows(
            &b"Email Address\n"[..],
            &opts(Format::Mailchimp, Some("newz")),
            &known(),
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "--topic \"newz\" is not a topic; known topics: news, offers"
        );
    }

    #[test]
    fn bom_is_tolerated() {
        let row = one("\u{feff}email,action\njo@example.com,grant\n");
        assert_eq!(row.email.as_str(), "jo@example.com");
        let row = one("\u{feff}\"email\",\"action\"\r\n\"jo@example.com\",\"grant\"\r\n");
        assert_eq!(row.line, 2);
    }

    #[test]
    fn blank_lines_are_skipped_and_lines_counted() {
        let rows = veto(
            "\n\nemail,action\n\njo@example.com,grant\n   \n,,\r\n\r\nbad,grant\nal@example.com,grant",
        );
        let lines: Vec<Result<u64, u64>> = rows
            .iter()
            .map(|r| r.as_ref().map(|r| r.line).map_err(|e| e.line))
            .collect();
        assert_eq!(lines, vec![Ok(5), Err(9), Ok(10)]);
    }

    #[test]
    fn every_kind_of_line_break_counts_once() {
        // CRLF, a lone CR (old Mac), LF, and no break at the end.
        let rows =
            veto("email,action\r\njo@example.com,grant\rbad,grant\n\r\nal@example.com,grant");
        let lines: Vec<Result<u64, u64>> = rows
            .iter()
            .map(|r| r.as_ref().map(|r| r.line).map_err(|e| e.line))
            .collect();
        assert_eq!(lines, vec![Ok(2), Err(3), Ok(5)]);
        let rows = veto(
            "email,action,attr.note\r\njo@example.com,grant,\"a\r\nb\r\nc\"\r\nbad,grant,\r\n",
        );
        assert_eq!(rows[0].as_ref().unwrap().attributes["note"], "a\nb\nc");
        assert_eq!(rows[1].as_ref().unwrap_err().line, 5);
    }

    /// Hands out one byte per read: splits every `\r\n` and BOM.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn reading_byte_by_byte_gives_the_same_rows() {
        let csv = "\u{feff}email,action,topic,attr.note\r\n\r\njo@example.com,grant,news,\"x\r\ny\"\r\nbad,grant,,\r\nal@example.com,object,,\r";
        let whole = veto(csv);
        let trickled: Vec<_> =
            read_rows(Trickle(csv.as_bytes()), &opts(Format::Veto, None), &known())
                .unwrap()
                .collect();
        assert_eq!(whole, trickled);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[2].as_ref().unwrap().line, 6);
    }

    #[test]
    fn multi_line_fields_give_the_starting_line() {
        let rows = veto(
            "email,action,attr.address\njo@example.com,grant,\"1 High St\nLeeds\"\nbad,grant,x\n",
        );
        let jo = rows[0].as_ref().unwrap();
        assert_eq!(jo.line, 2);
        assert_eq!(jo.attributes["address"], "1 High St\nLeeds");
        assert_eq!(rows[1].as_ref().unwrap_err().line, 4);
        // A name is one line.
        let e = one_error("email,action,name\njo@example.com,grant,\"Jo\nBloggs\"\n");
        assert_eq!(e.field.as_deref(), Some("name"));
    }

    #[test]
    fn column_names_match_their_slots() {
        let cols = [
            Col::Email,
            Col::Action,
            Col::Topic,
            Col::Channel,
            Col::At,
            Col::Source,
            Col::Wording,
            Col::Ip,
            Col::Jurisdiction,
            Col::SubscriberType,
            Col::OrderRef,
            Col::ProductGroup,
            Col::OptOutOffered,
            Col::Name,
            Col::Phone,
        ];
        assert_eq!(cols.len(), VETO_COLUMNS.len());
        for (i, c) in cols.iter().enumerate() {
            assert_eq!(*c as usize, i);
            let want = format!("{c:?}").chars().fold(String::new(), |mut s, ch| {
                if ch.is_uppercase() && !s.is_empty() {
                    s.push('_');
                }
                s.push(ch.to_ascii_lowercase());
                s
            });
            assert_eq!(VETO_COLUMNS[i], want);
        }
    }

    #[test]
    fn wrong_field_count_is_a_row_error() {
        let rows = veto(
            "email,action,topic\njo@example.com,grant\nal@example.com,grant,news,extra\nok@example.com,grant,news\n",
        );
        let e = rows[0].clone().unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.field, None);
        assert!(e.message.contains("2 fields but the header has 3"), "{e}");
        assert!(rows[1].clone().unwrap_err().message.contains("4 fields"));
        assert!(rows[2].is_ok());
    }

    #[test]
    fn invalid_utf8_in_a_cell_names_the_column() {
        let csv: &[u8] = b"email,action,name\njo@example.com,grant,Jos\xe9\n";
        let rows: Vec<_> = read_rows(csv, &opts(Format::Veto, None), &known())
            .unwrap()
            .collect();
        let e = rows[0].clone().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        assert!(e.message.contains("not UTF-8"), "{e}");
        let e = one_error("email,action,name\njo@example.com,grant,a\u{0}b\n");
        assert!(e.message.contains("U+0000"), "{e}");
    }

    #[test]
    fn a_quote_left_open_stops_reading_with_an_error() {
        let mut csv = String::from("email,action,name\njo@example.com,grant,\"open\n");
        while csv.len() < 2 * MAX_RECORD_BYTES as usize {
            csv.push_str("al@example.com,grant,x\n");
        }
        let mut iter = read_rows(csv.as_bytes(), &opts(Format::Veto, None), &known()).unwrap();
        let e = iter.next().unwrap().unwrap_err();
        assert_eq!(e.field, None);
        assert!(e.message.contains("reading stopped"), "{e}");
        assert!(iter.stopped_early());
        assert!(iter.next().is_none());
    }

    #[test]
    fn read_errors_stop_with_an_error() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let data = b"email,action\njo@example.com,grant\n";
                if self.0 >= data.len() {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = (data.len() - self.0).min(buf.len());
                buf[..n].copy_from_slice(&data[self.0..self.0 + n]);
                self.0 += n;
                Ok(n)
            }
        }
        let results: Vec<_> = read_rows(Failing(0), &opts(Format::Veto, None), &known())
            .unwrap()
            .collect();
        assert!(
            results.iter().any(|r| r
                .as_ref()
                .is_err_and(|e| e.message.contains("disk on fire"))),
            "{results:?}"
        );
    }

    // -- listmonk ----------------------------------------------------------

    const LISTMONK_EXPORT: &str = "\
uuid,email,name,attributes,status,created_at,updated_at
8f0c6a0e-1f4b-4f0a-9d7f-0c8e1b0e2a11,jo@example.com,Jo Bloggs,\"{\"\"city\"\": \"\"Leeds\"\", \"\"age\"\": 41, \"\"vip\"\": true, \"\"prefs\"\": {\"\"x\"\": 1}, \"\"n\"\": null}\",enabled,2021-03-04 10:19:25.953416 +0000 UTC,2024-05-06 07:08:09.1 +0000 +0000
2b1d0c7e-0f6c-4a7a-8c3e-3b9a5e4f6d22,al@example.com,Al,{},blocklisted,2021-03-04 10:19:25 +0000 UTC,2023-01-02 03:04:05 +0000 UTC
";

    fn listmonk(csv: &str) -> Vec<Result<ImportRow, RowError>> {
        read_rows(
            csv.as_bytes(),
            &opts(Format::Listmonk, Some("news")),
            &known(),
        )
        .unwrap()
        .collect()
    }

    #[test]
    fn listmonk_export_without_subscription_status() {
        let rows = listmonk(LISTMONK_EXPORT);
        let e = rows[0].clone().unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("status")));
        assert!(e.message.contains("no evidence of consent"), "{e}");
        let al = rows[1].clone().unwrap();
        assert_eq!(al.email.as_str(), "al@example.com");
        assert_eq!(al.name.as_deref(), Some("Al"));
        assert_eq!(al.event.kind, EventKind::Withdraw);
        assert_eq!(al.event.scope, Scope::All);
        assert_eq!(al.event.channel, Some(Channel::Email));
        assert_eq!(al.event.at, ts("2023-01-02T03:04:05Z"));
    }

    #[test]
    fn listmonk_with_subscription_status() {
        let csv = "\
uuid,email,name,attributes,status,created_at,updated_at,subscription_status,list_id
u1,jo@example.com,Jo,\"{\"\"city\"\": \"\"Leeds\"\", \"\"age\"\": 41, \"\"vip\"\": true, \"\"prefs\"\": {\"\"x\"\": 1}, \"\"n\"\": null}\",enabled,2020-01-02 15:04:05.123456+00,2024-01-01 00:00:00+00,confirmed,3
u2,al@example.com,Al,,enabled,2020-01-02 15:04:05+00,2024-01-01 00:00:00+00,unsubscribed,3
u3,mo@example.com,Mo,{},enabled,2020-01-02T15:04:05Z,,unconfirmed,3
u4,di@example.com,Di,{},disabled,2020-01-02T15:04:05Z,,confirmed,3
u5,bo@example.com,Bo,{},blocklisted,2020-01-02T15:04:05Z,,confirmed,3
u6,xx@example.com,Xx,[1],enabled,2020-01-02T15:04:05Z,,confirmed,3
";
        let rows = listmonk(csv);
        let jo = rows[0].clone().unwrap();
        assert_eq!(jo.event.kind, EventKind::Grant);
        assert_eq!(jo.event.scope, Scope::Topic(TopicId(1)));
        assert_eq!(jo.event.at, ts("2020-01-02T15:04:05.123456Z"));
        let attrs: Vec<(&str, &str)> = jo
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            vec![("age", "41"), ("city", "Leeds"), ("vip", "true")]
        );
        let al = rows[1].clone().unwrap();
        assert_eq!(
            (al.event.kind.clone(), al.event.scope),
            (EventKind::Withdraw, Scope::Topic(TopicId(1)))
        );
        assert_eq!(al.event.at, ts("2024-01-01T00:00:00Z"));
        let e = rows[2].clone().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscription_status"));
        assert!(
            e.message
                .starts_with("unconfirmed subscription: no consent to import"),
            "{e}"
        );
        assert!(rows[3].clone().unwrap_err().message.contains("disabled"));
        let bo = rows[4].clone().unwrap();
        assert_eq!(
            (bo.event.kind.clone(), bo.event.scope),
            (EventKind::Withdraw, Scope::All)
        );
        assert_eq!(bo.event.at, now(), "no updated_at: the import's time");
        let e = rows[5].clone().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("attributes"));
    }

    #[test]
    fn listmonk_header_checks() {
        let o = opts(Format::Listmonk, Some("news"));
        let e = read_rows(&b"uuid,name,status\n"[..], &o, &known())
            .err()
            .unwrap();
        assert!(
            matches!(e, FileError::MissingColumn { name: "email", .. }),
            "{e:?}"
        );
        let e = read_rows(&b"uuid,email,status,email\n"[..], &o, &known())
            .err()
            .unwrap();
        assert!(matches!(e, FileError::DuplicateColumn { .. }), "{e:?}");
        // Unknown columns (and duplicates among them) are ignored.
        let rows: Vec<_> = read_rows(
            &b"x,email,status,x\n1,a@example.com,blocklisted,2\n"[..],
            &o,
            &known(),
        )
        .unwrap()
        .collect();
        assert!(rows[0].is_ok(), "{rows:?}");
    }

    #[test]
    fn listmonk_times() {
        for (s, want) in [
            (
                "2021-03-04 10:19:25.953416 +0000 UTC",
                "2021-03-04T10:19:25.953416Z",
            ),
            (
                "2021-03-04 10:19:25.953416 +0000 +0000",
                "2021-03-04T10:19:25.953416Z",
            ),
            ("2021-03-04 11:19:25 +0100 CET", "2021-03-04T10:19:25Z"),
            (
                "2020-01-02 15:04:05.123456+00",
                "2020-01-02T15:04:05.123456Z",
            ),
            ("2020-01-02 15:04:05+05:30", "2020-01-02T09:34:05Z"),
            ("2020-01-02T15:04:05Z", "2020-01-02T15:04:05Z"),
        ] {
            assert_eq!(parse_listmonk_time(s), Ok(ts(want)), "{s}");
        }
        assert!(parse_listmonk_time("2020-01-02 15:04:05").is_err());
        assert!(parse_listmonk_time("soon").is_err());
    }

    // -- Mailchimp ---------------------------------------------------------

    const MC_SUBSCRIBED: &str = "\
\"Email Address\",\"First Name\",\"Last Name\",\"Address\",\"Phone Number\",MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS
jo@example.com,Jo,Bloggs,\"1 High St, Leeds\",+44 113 496 0000,2,\"2023-04-05 10:11:12\",198.51.100.7,\"2023-04-05 10:15:00\",198.51.100.8,53.8,-1.5,0,1,Europe/London,GB,ENG,\"2024-01-01 00:00:00\",123,abc,,\"\"\"VIP\"\"\"
al@example.com,Al,,,,1,\"2022-01-01 09:00:00\",203.0.113.9,,,,,,,,,,\"2022-01-01 09:00:00\",124,abd,,
mo@example.com,,,,,1,,,,,,,,,,,,\"2022-01-01 09:00:00\",125,abe,,
";

    const MC_UNSUBSCRIBED: &str = "\
Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,UNSUB_REASON_OTHER,LEID,EUID,NOTES,TAGS,LAST_CHANGED
jo@example.com,Jo,Bloggs,2,2023-04-05 10:11:12,198.51.100.7,,,,,,,,,,2024-02-03 04:05:06,Spring sale,abc123,NORMAL,,1,e1,,,2024-02-03 04:05:06
al@example.com,Al,,1,,,,,,,,,,,,,,,,,2,e2,,,2024-03-01 00:00:00
";

    const MC_CLEANED: &str = "\
Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID,LEID,EUID,NOTES,TAGS,LAST_CHANGED
gone@example.com,,,1,,,,,2024-05-06 07:08:09,Newsletter 12,c12,1,e1,,,2024-05-06 07:08:09
";

    fn mailchimp(csv: &str) -> Vec<Result<ImportRow, RowError>> {
        read_rows(
            csv.as_bytes(),
            &opts(Format::Mailchimp, Some("offers")),
            &known(),
        )
        .unwrap()
        .collect()
    }

    #[test]
    fn mailchimp_subscribed() {
        let rows = mailchimp(MC_SUBSCRIBED);
        let jo = rows[0].clone().unwrap();
        assert_eq!(jo.name.as_deref(), Some("Jo Bloggs"));
        assert_eq!(jo.event.kind, EventKind::Grant);
        assert_eq!(jo.event.scope, Scope::Topic(TopicId(2)));
        assert_eq!(jo.event.channel, Some(Channel::Email));
        assert_eq!(
            jo.event.at,
            ts("2023-04-05T10:15:00Z"),
            "CONFIRM_TIME first"
        );
        assert_eq!(jo.ip.as_deref(), Some("198.51.100.8"));
        let attrs: Vec<(&str, &str)> = jo
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            vec![
                ("address", "1 High St, Leeds"),
                ("phone_number", "+44 113 496 0000")
            ]
        );
        let al = rows[1].clone().unwrap();
        assert_eq!(al.name.as_deref(), Some("Al"));
        assert_eq!(
            al.event.at,
            ts("2022-01-01T09:00:00Z"),
            "OPTIN_TIME when not confirmed"
        );
        assert_eq!(al.ip.as_deref(), Some("203.0.113.9"));
        let e = rows[2].clone().unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("no evidence"), "{e}");
    }

    #[test]
    fn mailchimp_unsubscribed_and_cleaned() {
        let rows = mailchimp(MC_UNSUBSCRIBED);
        let jo = rows[0].clone().unwrap();
        assert_eq!(jo.event.kind, EventKind::Withdraw);
        assert_eq!(jo.event.scope, Scope::Topic(TopicId(2)));
        assert_eq!(jo.event.at, ts("2024-02-03T04:05:06Z"));
        assert_eq!(jo.ip, None);
        let al = rows[1].clone().unwrap();
        assert_eq!(
            al.event.kind,
            EventKind::Withdraw,
            "an unsubscribed file never grants"
        );
        assert_eq!(
            al.event.at,
            ts("2024-03-01T00:00:00Z"),
            "LAST_CHANGED when UNSUB_TIME is empty"
        );

        let rows = mailchimp(MC_CLEANED);
        let gone = rows[0].clone().unwrap();
        assert_eq!(gone.event.kind, EventKind::HardBounce);
        assert_eq!(gone.event.scope, Scope::All);
        assert_eq!(gone.event.channel, Some(Channel::Email));
        assert_eq!(gone.event.at, ts("2024-05-06T07:08:09Z"));
        assert!(gone.attributes.is_empty(), "{:?}", gone.attributes);
    }

    #[test]
    fn mailchimp_joined_files_decide_per_row() {
        let csv = "Email Address,OPTIN_TIME,UNSUB_TIME,CLEAN_TIME\n\
                   a@example.com,2023-01-01 00:00:00,2024-01-01 00:00:00,\n\
                   b@example.com,,,2024-01-01 00:00:00\n\
                   c@example.com,2023-01-01 00:00:00,,\n";
        let rows = mailchimp(csv);
        assert_eq!(rows[0].as_ref().unwrap().event.kind, EventKind::Withdraw);
        assert_eq!(rows[1].as_ref().unwrap().event.kind, EventKind::HardBounce);
        assert!(
            rows[2]
                .as_ref()
                .unwrap_err()
                .message
                .contains("cannot tell")
        );
    }

    #[test]
    fn mailchimp_header_checks() {
        let o = opts(Format::Mailchimp, Some("offers"));
        let e = read_rows(&b"Email,First Name\n"[..], &o, &known())
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                FileError::MissingColumn {
                    name: "Email Address",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = read_rows(&b"Email Address,Birthday,birthday\n"[..], &o, &known())
            .err()
            .unwrap();
        assert!(matches!(e, FileError::DuplicateColumn { .. }), "{e:?}");
    }

    #[test]
    fn mailchimp_bad_time_and_future() {
        let rows = mailchimp(
            "Email Address,OPTIN_TIME\na@example.com,05/04/2023\nb@example.com,2026-03-13 00:00:00\n",
        );
        let e = rows[0].clone().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("OPTIN_TIME"));
        assert!(e.message.contains("2023-04-05 10:11:12"), "{e}");
        assert!(rows[1].clone().unwrap_err().message.contains("future"));
    }

    // -- streaming and robustness -------------------------------------------

    /// Generates `rows` rows on the fly, so the test itself holds no file.
    struct Generated {
        rows: u64,
        next: u64,
        pending: Vec<u8>,
        pos: usize,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.pending.len() {
                self.pending.clear();
                self.pos = 0;
                if self.next == 0 {
                    self.pending.extend_from_slice(b"email,action,topic,at\n");
                } else if self.next <= self.rows {
                    let n = self.next;
                    let action = ["grant", "withdraw", "purchase"][(n % 3) as usize];
                    let topic = if action == "purchase" { "" } else { "news" };
                    let line =
                        format!("user{n}@example.com,{action},{topic},2025-01-01T00:00:00Z\n");
                    self.pending.extend_from_slice(line.as_bytes());
                } else {
                    return Ok(0);
                }
                self.next += 1;
            }
            let n = (self.pending.len() - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn streams_many_rows() {
        const ROWS: u64 = 200_000;
        let input = Generated {
            rows: ROWS,
            next: 0,
            pending: Vec::new(),
            pos: 0,
        };
        let mut iter = read_rows(input, &opts(Format::Veto, None), &known()).unwrap();
        let (mut ok, mut last_line) = (0u64, 0u64);
        for row in iter.by_ref() {
            match row {
                Ok(row) => {
                    ok += 1;
                    last_line = row.line;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, ROWS);
        assert_eq!(last_line, ROWS + 1);
        assert!(iter.bytes_read() > ROWS * 40, "{}", iter.bytes_read());
        assert!(!iter.stopped_early());
    }

    #[test]
    fn bytes_read_moves_forward() {
        let csv = "\u{feff}email,action\njo@example.com,grant\n";
        let mut iter = read_rows(csv.as_bytes(), &opts(Format::Veto, None), &known()).unwrap();
        assert!(iter.next().is_some());
        assert!(iter.next().is_none());
        assert_eq!(iter.bytes_read(), csv.len() as u64);
    }

    /// A small deterministic generator (xorshift64*): no extra dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        let seeds: &[&[u8]] = &[
            b"email,action,topic,channel,at,source,wording,ip,jurisdiction,subscriber_type,order_ref,product_group,opt_out_offered,name,attr.k\n\
              jo@example.com,purchase,,sms,2026-01-01T00:00:00Z,x,7,::1,UK|US,corporate,o,g,no,Jo,v\n",
            LISTMONK_EXPORT.as_bytes(),
            MC_SUBSCRIBED.as_bytes(),
            MC_UNSUBSCRIBED.as_bytes(),
        ];
        let alphabet: &[u8] = b",\"\n\r \t;|{}:.@-0123456789aeiouxZT+\xef\xbb\xbf\xff\x00\xc3";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let known = known();
        for round in 0..3000 {
            let mut data: Vec<u8> = if round % 4 == 0 {
                let len = rng.below(300);
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                seeds[rng.below(seeds.len())].to_vec()
            };
            for _ in 0..rng.below(12) {
                if data.is_empty() {
                    break;
                }
                let at = rng.below(data.len());
                match rng.below(3) {
                    0 => data[at] = alphabet[rng.below(alphabet.len())],
                    1 => data.insert(at, alphabet[rng.below(alphabet.len())]),
                    _ => {
                        data.remove(at);
                    }
                }
            }
            for format in Format::ALL {
                let topic = (*format != Format::Veto).then_some("news");
                match read_rows(data.as_slice(), &opts(*format, topic), &known) {
                    Ok(iter) => {
                        for row in iter {
                            // Messages render without panicking, too.
                            if let Err(e) = row {
                                let _ = e.to_string();
                            }
                        }
                    }
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        }
    }
}
