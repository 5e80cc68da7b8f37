//! Column alignment with the semantics of Go's `text/tabwriter` (as `siftool` configures
//! it: minimum width 0, space padding, no flags), so that `sif header` and `sif info` are
//! byte-identical to the Go tool, including for odd bytes in names and launch scripts.
//!
//! Cells end at a tab or vertical tab; lines end at a newline, or a form feed (which also
//! flushes). The last cell of a line does not take part in alignment. A column block is a
//! run of consecutive lines that all have a cell in that column; each block gets the width
//! of its widest cell plus the padding. 0xFF bytes bracket escaped text, which is passed
//! through and counts as its width without the two escape bytes. Widths count UTF-8
//! characters, each invalid byte counting as one.

const ESCAPE: u8 = 0xFF;

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    /// Bytes of text in the cell.
    size: usize,
    /// Display width.
    width: i64,
}

/// A Go-compatible tab writer that collects its output in memory.
#[derive(Debug)]
pub struct TabWriter {
    padding: i64,
    buf: Vec<u8>,
    pos: usize,
    cell: Cell,
    in_escape: bool,
    lines: Vec<Vec<Cell>>,
    widths: Vec<i64>,
    out: Vec<u8>,
}

impl TabWriter {
    /// A writer that pads cells with `padding` spaces.
    pub fn new(padding: usize) -> TabWriter {
        TabWriter {
            padding: i64::try_from(padding).unwrap_or(0),
            buf: Vec::new(),
            pos: 0,
            cell: Cell::default(),
            in_escape: false,
            lines: vec![Vec::new()],
            widths: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Adds text.
    pub fn write(&mut self, text: &[u8]) {
        let mut n = 0;
        for (i, &ch) in text.iter().enumerate() {
            if !self.in_escape {
                match ch {
                    b'\t' | 0x0B | b'\n' | 0x0C => {
                        self.append(&text[n..i]);
                        self.update_width();
                        n = i + 1;
                        let ncells = self.terminate_cell();
                        if ch == b'\n' || ch == 0x0C {
                            self.lines.push(Vec::new());
                            if ch == 0x0C || ncells == 1 {
                                self.flush_lines();
                            }
                        }
                    }
                    ESCAPE => {
                        self.append(&text[n..i]);
                        self.update_width();
                        n = i;
                        self.in_escape = true;
                    }
                    _ => {}
                }
            } else if ch == ESCAPE {
                self.append(&text[n..=i]);
                n = i + 1;
                self.end_escape();
            }
        }
        self.append(&text[n..]);
    }

    /// Flushes and returns everything written.
    pub fn finish(mut self) -> Vec<u8> {
        self.flush_lines();
        self.out
    }

    fn append(&mut self, text: &[u8]) {
        self.buf.extend_from_slice(text);
        self.cell.size += text.len();
    }

    fn update_width(&mut self) {
        self.cell.width += rune_count(&self.buf[self.pos..]);
        self.pos = self.buf.len();
    }

    fn end_escape(&mut self) {
        self.update_width();
        self.cell.width -= 2;
        self.pos = self.buf.len();
        self.in_escape = false;
    }

    fn terminate_cell(&mut self) -> usize {
        let cell = std::mem::take(&mut self.cell);
        match self.lines.last_mut() {
            Some(line) => {
                line.push(cell);
                line.len()
            }
            None => {
                self.lines.push(vec![cell]);
                1
            }
        }
    }

    fn flush_lines(&mut self) {
        if self.cell.size > 0 {
            if self.in_escape {
                self.end_escape();
            }
            self.terminate_cell();
        }
        let n = self.lines.len();
        self.format(0, 0, n);
        self.buf.clear();
        self.pos = 0;
        self.cell = Cell::default();
        self.in_escape = false;
        self.lines = vec![Vec::new()];
    }

    fn format(&mut self, pos0: usize, line0: usize, line1: usize) -> usize {
        let mut pos = pos0;
        let column = self.widths.len();
        let mut line0 = line0;
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            // A cell in this column: this line starts a column block.
            pos = self.write_lines(pos, line0, this);
            line0 = this;
            let mut width = 0i64;
            while this < line1 {
                let line = &self.lines[this];
                if column + 1 >= line.len() {
                    break;
                }
                width = width.max(line[column].width + self.padding);
                this += 1;
            }
            self.widths.push(width);
            pos = self.format(pos, line0, this);
            self.widths.pop();
            line0 = this;
        }
        self.write_lines(pos, line0, line1)
    }

    fn write_lines(&mut self, pos0: usize, line0: usize, line1: usize) -> usize {
        let mut pos = pos0;
        for i in line0..line1 {
            for (j, c) in self.lines[i].iter().enumerate() {
                if c.size > 0 {
                    self.out.extend_from_slice(&self.buf[pos..pos + c.size]);
                    pos += c.size;
                }
                if let Some(&w) = self.widths.get(j) {
                    let pad = usize::try_from(w - c.width).unwrap_or(0);
                    self.out.extend(std::iter::repeat_n(b' ', pad));
                }
            }
            if i + 1 == self.lines.len() {
                // The last buffered line has no newline yet: write its pending text.
                self.out
                    .extend_from_slice(&self.buf[pos..pos + self.cell.size]);
                pos += self.cell.size;
            } else {
                self.out.push(b'\n');
            }
        }
        pos
    }
}

/// Number of UTF-8 characters in `b`, counting each byte of an invalid sequence as one
/// (Go's `utf8.RuneCount`).
pub fn rune_count(b: &[u8]) -> i64 {
    let mut n = 0i64;
    for chunk in b.utf8_chunks() {
        n += chunk.valid().chars().count() as i64;
        n += chunk.invalid().len() as i64;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tab(padding: usize, text: &str) -> String {
        let mut w = TabWriter::new(padding);
        w.write(text.as_bytes());
        String::from_utf8(w.finish()).expect("utf8")
    }

    #[test]
    fn test_aligns_a_column() {
        assert_eq!(tab(1, "a:\tx\nlonger:\ty\n"), "a:      x\nlonger: y\n");
    }

    #[test]
    fn test_leading_empty_cell_gets_padding() {
        assert_eq!(
            tab(2, "\tID:\t1\n\tData Type:\tFS\n"),
            "  ID:         1\n  Data Type:  FS\n"
        );
    }

    #[test]
    fn test_line_without_tabs_ends_the_block() {
        // "b" has a single cell, so the blocks above and below it align separately.
        assert_eq!(tab(1, "aaaa:\t1\nb\nc:\t2\n"), "aaaa: 1\nb\nc: 2\n");
        // An embedded newline in a value splits a line the same way.
        assert_eq!(
            tab(1, "Launch Script:\tx\ny\nVersion:\t01\n"),
            "Launch Script: x\ny\nVersion: 01\n"
        );
    }

    #[test]
    fn test_text_without_trailing_newline() {
        assert_eq!(tab(1, "a\tb"), "a b");
    }

    #[test]
    fn test_widths_count_characters_and_escapes() {
        assert_eq!(tab(1, "é\t1\nab\t2\n"), "é  1\nab 2\n");
        assert_eq!(rune_count(b"\xe2\x82A"), 3);
        assert_eq!(rune_count("héllo".as_bytes()), 5);
        // Escaped text passes through; the escape bytes do not count.
        let mut w = TabWriter::new(1);
        w.write(b"\xffa\tb\xff\t1\nxxxxxx\t2\n");
        assert_eq!(w.finish(), b"\xffa\tb\xff    1\nxxxxxx 2\n".to_vec());
    }

    #[test]
    fn test_form_feed_flushes() {
        assert_eq!(tab(1, "a\t1\x0cbbb\t2\n"), "a 1\nbbb 2\n");
    }
}
