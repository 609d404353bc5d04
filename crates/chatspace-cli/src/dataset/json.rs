//! JSON datasets: telling JSON Lines from one JSON array, inferring a JSON Lines file's
//! schema, and reading it line by line so a bad line is named (number, and column where JSON
//! says) as it is read.

use super::*;

/// A `.json` file's format: one array when its first non-blank byte is `[`, else JSON Lines.
pub(super) fn sniff_json(path: &Path) -> Result<Format> {
    let mut reader = BufReader::new(open(path)?);
    loop {
        let buf = reader
            .fill_buf()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if buf.is_empty() {
            return Ok(Format::JsonLines);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                return Ok(if buf[i] == b'[' {
                    Format::JsonArray
                } else {
                    Format::JsonLines
                });
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

pub(super) fn read_json_array(path: &Path) -> Result<Vec<serde_json::Value>> {
    let mut bytes = Vec::new();
    open(path)?
        .read_to_end(&mut bytes)
        .map_err(|e| bad_input!("cannot read dataset file {}: {e}", path.display()))?;
    let values: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(|e| {
        bad_input!(
            "dataset file {} line {} column {}: not a valid JSON array: {}",
            path.display(),
            e.line(),
            e.column(),
            serde_text(&e)
        )
    })?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_object()) {
        return Err(bad_input!(
            "dataset file {}: element {} of the array is {}, not a JSON object",
            path.display(),
            i + 1,
            json_kind(v)
        ));
    }
    Ok(values)
}

/// A serde_json error without its ` at line L column C` (the caller says where).
pub(super) fn serde_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&at).unwrap_or(&text).to_string()
}

/// An Arrow error without its `Json error: ` prefix.
pub(super) fn arrow_text(e: &ArrowError) -> String {
    match e {
        ArrowError::JsonError(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `a string`, `an array`, ... for error messages.
pub(super) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// One line of a JSON Lines file.
pub(super) struct Line<'a> {
    /// 1-based line number.
    number: u64,
    /// Byte offset of the line's start in the file.
    start: u64,
    /// The line, UTF-8 checked, without its line break or a leading byte order mark.
    bytes: &'a [u8],
}

/// Reads a JSON Lines file line by line, counting lines and checking that each is UTF-8.
pub(super) struct Lines<'p> {
    path: &'p Path,
    reader: BufReader<File>,
    buf: Vec<u8>,
    number: u64,
    offset: u64,
}

impl<'p> Lines<'p> {
    pub(super) fn open(path: &'p Path) -> Result<Self> {
        Ok(Lines {
            path,
            reader: BufReader::with_capacity(1 << 16, open(path)?),
            buf: Vec::new(),
            number: 0,
            offset: 0,
        })
    }

    /// Starts reading at byte `offset`, which is the start of line `number`.
    pub(super) fn open_at(path: &'p Path, offset: u64, number: u64) -> Result<Self> {
        let mut lines = Lines::open(path)?;
        lines
            .reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| bad_input!("cannot read dataset file {}: {e}", path.display()))?;
        lines.offset = offset;
        lines.number = number - 1;
        Ok(lines)
    }

    /// The next line that is not blank; `None` at the end of the file.
    pub(super) fn next(&mut self) -> Result<Option<Line<'_>>> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| bad_input!("cannot read dataset file {}: {e}", self.path.display()))?;
            if n == 0 {
                return Ok(None);
            }
            let start = self.offset;
            self.offset += n as u64;
            self.number += 1;
            let bom = self.number == 1 && self.buf.starts_with(b"\xef\xbb\xbf");
            let from = if bom { 3 } else { 0 };
            let mut to = self.buf.len();
            while to > from && matches!(self.buf[to - 1], b'\n' | b'\r') {
                to -= 1;
            }
            if let Err(e) = std::str::from_utf8(&self.buf[from..to]) {
                return Err(bad_input!(
                    "dataset file {} line {}: not valid UTF-8 (at byte {} of the line)",
                    self.path.display(),
                    self.number,
                    e.valid_up_to() + 1
                ));
            }
            if self.buf[from..to].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(Line {
                number: self.number,
                start,
                bytes: &self.buf[from..to],
            }));
        }
    }
}

/// The columns of a JSON Lines file, inferred from every line as arrow-json does; a line that is
/// not one JSON object is an error naming it.
pub(super) fn infer_json_lines(path: &Path) -> Result<Schema> {
    let mut lines = Lines::open(path)?;
    let mut failure: Option<anyhow::Error> = None;
    let mut last = 0u64;
    let values = std::iter::from_fn(|| {
        let line = match lines.next() {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(e) => {
                failure = Some(e);
                return None;
            }
        };
        last = line.number;
        match serde_json::from_slice::<serde_json::Value>(line.bytes) {
            Ok(v) if v.is_object() => Some(Ok(v)),
            Ok(v) => {
                failure = Some(bad_input!(
                    "dataset file {} line {}: expected a JSON object, found {}",
                    path.display(),
                    line.number,
                    json_kind(&v)
                ));
                None
            }
            Err(e) => {
                failure = Some(bad_input!(
                    "dataset file {} line {} column {}: not valid JSON: {}",
                    path.display(),
                    line.number,
                    e.column(),
                    serde_text(&e)
                ));
                None
            }
        }
    });
    let schema = arrow::json::reader::infer_json_schema_from_iterator(values);
    if let Some(e) = failure {
        return Err(e);
    }
    // Inference fails on the value it was given last (a type that conflicts with earlier lines).
    schema.map_err(|e| {
        bad_input!(
            "dataset file {} line {last}: {}",
            path.display(),
            arrow_text(&e)
        )
    })
}

pub(super) fn json_decoder(schema: &SchemaRef) -> Result<Decoder, ArrowError> {
    ReaderBuilder::new(schema.clone())
        .with_batch_size(READ_BATCH_ROWS)
        .build_decoder()
}

/// Reads a JSON Lines file in batches of [`READ_BATCH_ROWS`] rows, one line at a time so that an
/// error names its line; `Ok(false)` when `each` asked to stop.
pub(super) fn read_json_lines(
    schema: &SchemaRef,
    path: &Path,
    each: &mut impl FnMut(RecordBatch) -> Result<bool>,
) -> Result<bool> {
    let at = |line: u64, e: &dyn std::fmt::Display| {
        bad_input!("dataset file {} line {line}: {e}", path.display())
    };
    let mut decoder = json_decoder(schema)
        .map_err(|e| bad_input!("cannot read dataset file {}: {e}", path.display()))?;
    let mut lines = Lines::open(path)?;
    // The first line of the rows in `decoder`: (number, byte offset).
    let mut first: Option<(u64, u64)> = None;
    loop {
        let line = lines.next()?;
        let full = decoder.len() >= READ_BATCH_ROWS;
        if (line.is_none() || full)
            && let Some((number, start)) = first.take()
        {
            let batch = match decoder.flush() {
                Ok(batch) => batch,
                Err(e) => return Err(find_bad_line(schema, path, number, start, &e)),
            };
            if let Some(batch) = batch
                && !each(batch)?
            {
                return Ok(false);
            }
        }
        let Some(line) = line else {
            return Ok(true);
        };
        first.get_or_insert((line.number, line.start));
        let before = decoder.len();
        let used = decoder
            .decode(line.bytes)
            .map_err(|e| at(line.number, &arrow_text(&e)))?;
        if decoder.has_partial_record() {
            return Err(at(
                line.number,
                &"the JSON object does not end on this line (each line must hold one object)",
            ));
        }
        if used < line.bytes.len() || decoder.len() > before + 1 {
            return Err(at(
                line.number,
                &"more than one JSON value on this line (each line must hold one object)",
            ));
        }
    }
}

/// The error for a batch that failed to decode (a value of the wrong type): decodes its lines,
/// from line `number` at byte `start`, one at a time to name the first bad one.
pub(super) fn find_bad_line(
    schema: &SchemaRef,
    path: &Path,
    number: u64,
    start: u64,
    err: &ArrowError,
) -> anyhow::Error {
    let found = (|| -> Result<Option<(u64, ArrowError)>> {
        let mut lines = Lines::open_at(path, start, number)?;
        for _ in 0..READ_BATCH_ROWS {
            let Some(line) = lines.next()? else { break };
            let one = json_decoder(schema).and_then(|mut d| {
                d.decode(line.bytes)?;
                d.flush()
            });
            if let Err(e) = one {
                return Ok(Some((line.number, e)));
            }
        }
        Ok(None)
    })();
    match found {
        Ok(Some((line, e))) => bad_input!(
            "dataset file {} line {line}: {}",
            path.display(),
            arrow_text(&e)
        ),
        Ok(None) => bad_input!(
            "dataset file {} (rows from line {number}): {}",
            path.display(),
            arrow_text(err)
        ),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
            "text",
            arrow::datatypes::DataType::Utf8,
            true,
        )]))
    }

    /// Reads `body` as JSON Lines with a `text: Utf8` schema: rows read, or the error.
    fn read_lines(body: &[u8]) -> Result<usize, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, body).unwrap();
        let mut rows = 0;
        read_json_lines(&text_schema(), &path, &mut |b: RecordBatch| {
            rows += b.num_rows();
            Ok(true)
        })
        .map(|_| rows)
        .map_err(|e| {
            let text = e.to_string();
            let prefix = format!("dataset file {} ", path.display());
            text.strip_prefix(&prefix).unwrap_or(&text).to_string()
        })
    }

    #[test]
    fn json_lines_errors_name_the_line() {
        let good = "{\"text\": \"a\"}\n".repeat(1500);
        assert_eq!(read_lines(good.as_bytes()), Ok(1500));
        // Blank lines, CRLF and a byte order mark are fine, and count as lines.
        assert_eq!(
            read_lines(b"\xef\xbb\xbf{\"text\": \"a\"}\r\n\n  \n{\"text\": null}"),
            Ok(2)
        );
        // A value of another type, found after the first batch: the batch is decoded again
        // line by line to name it.
        let body = format!("{good}{{\"text\": 5}}\n{good}");
        assert_eq!(
            read_lines(body.as_bytes()).unwrap_err(),
            "line 1501: whilst decoding field 'text': expected string got 5"
        );
        let err = read_lines(b"{\"text\": \"a\"}\n[1, 2]\n").unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
        let err =
            read_lines(b"{\"text\": \"a\"}\n{\"text\": \"b\"\n{\"text\": \"c\"}\n").unwrap_err();
        assert_eq!(
            err,
            "line 2: the JSON object does not end on this line (each line must hold one object)"
        );
        let err = read_lines(b"{\"text\": \"a\"} {\"text\": \"b\"}\n").unwrap_err();
        assert!(err.starts_with("line 1: more than one JSON value"), "{err}");
        let err = read_lines(b"{\"text\": \"a\"}\n\n{\"text\": tru}\n").unwrap_err();
        assert!(err.starts_with("line 3: "), "{err}");
        let err = read_lines(b"{\"text\": \"a\"}\n{\"text\": \"\xff\"}\n").unwrap_err();
        assert_eq!(err, "line 2: not valid UTF-8 (at byte 11 of the line)");
    }

    #[test]
    fn json_lines_inference_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &str); 4] = [
            (
                "syntax",
                b"{\"text\": \"a\"}\n{\"text\": \"b\"\n",
                "line 2 column 12: not valid JSON: EOF while parsing an object",
            ),
            (
                "array",
                b"{\"text\": \"a\"}\n\n[1]\n",
                "line 3: expected a JSON object, found an array",
            ),
            (
                "utf8",
                b"{\"text\": \"a\xc3\"}\n",
                "line 1: not valid UTF-8 (at byte 12 of the line)",
            ),
            (
                "conflict",
                b"{\"m\": [1]}\n{\"m\": {\"a\": 1}}\n",
                "line 2: ",
            ),
        ];
        for (name, body, want) in cases {
            let path = dir.path().join(format!("{name}.jsonl"));
            std::fs::write(&path, body).unwrap();
            let err = file_schema(&path).unwrap_err().to_string();
            let want = format!("dataset file {} {want}", path.display());
            assert!(err.starts_with(&want), "{name}: {err}");
        }
    }

    #[test]
    fn json_array_errors_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, "[\n{\"text\": \"a\"},\n{\"text\": }\n]").unwrap();
        let err = file_schema(&path).unwrap_err().to_string();
        assert!(
            err.contains("a.json line 3 column 10: not a valid JSON array"),
            "{err}"
        );
        std::fs::write(&path, "[{\"text\": \"a\"}, 7]").unwrap();
        let err = file_schema(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("a.json: element 2 of the array is a number, not a JSON object"),
            "{err}"
        );
    }
}
