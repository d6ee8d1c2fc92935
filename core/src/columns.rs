//! Arrow-layout column buffers, handed to pyarrow without per-value Python work
//! (`pa.Array.from_buffers` over the raw bytes).

use std::mem::MaybeUninit;

/// A `utf8` column: int32 offsets (one more than rows) and the concatenated text.
#[derive(Debug)]
pub struct StringColumn {
    offsets: Vec<i32>,
    data: String,
}

impl Default for StringColumn {
    fn default() -> Self {
        Self::new()
    }
}

impl StringColumn {
    pub fn new() -> Self {
        StringColumn {
            offsets: vec![0],
            data: String::new(),
        }
    }

    /// Room for `rows` values of `bytes` bytes of text in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StringColumn {
            offsets,
            data: String::with_capacity(bytes),
        }
    }

    /// Empty, keeping the room of the buffers.
    pub fn clear(&mut self) {
        self.offsets.truncate(1);
        self.data.clear();
    }

    /// The average length of the values held (0 when empty).
    pub fn mean_len(&self) -> usize {
        self.data.len() / self.len().max(1)
    }

    /// Append one value. Panics past 2 GiB of text (an Arrow `utf8` limit; a
    /// batch is far smaller).
    pub fn push(&mut self, value: &str) {
        self.data.push_str(value);
        self.end_row();
    }

    /// Append one value that `write` writes in place.
    pub fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        write(&mut self.data);
        self.end_row();
    }

    /// The text after the last row: what `end_row` makes the next row.
    pub fn text_mut(&mut self) -> &mut String {
        &mut self.data
    }

    /// Close the row written through `text_mut`.
    pub fn end_row(&mut self) {
        let end = i32::try_from(self.data.len()).expect("string column under 2 GiB");
        self.offsets.push(end);
    }

    /// Row `i`'s value.
    #[inline]
    pub fn get(&self, i: usize) -> &str {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Row `i`'s value as UTF-8 bytes (`get` without its check that the
    /// range falls on character boundaries: rows are whole `str`s).
    pub fn bytes(&self, i: usize) -> &[u8] {
        &self.data.as_bytes()[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The int32 offsets (one more than rows; the first is 0).
    pub fn offsets(&self) -> &[i32] {
        &self.offsets
    }

    /// Bytes of text of the values at `runs` (`runs_of`), in all.
    pub fn runs_len(&self, runs: &[(usize, usize)]) -> usize {
        let span = |&(first, count): &(usize, usize)| {
            (self.offsets[first + count] - self.offsets[first]) as usize
        };
        runs.iter().map(span).sum()
    }

    /// The values at `runs` (`runs_of`), in order, as a `utf8` column's
    /// buffers: little-endian int32 `offsets` (4 bytes per value and 4 more)
    /// and `data` (`runs_len` bytes). One copy of text per run, whose offsets
    /// move as a block. Panics when the buffers have other sizes or past
    /// 2 GiB of text (an Arrow `utf8` limit; a batch is far smaller).
    /// Every byte of both buffers is written (they may start uninitialised).
    pub fn gather_runs(
        &self,
        runs: &[(usize, usize)],
        offsets: &mut [MaybeUninit<u8>],
        data: &mut [MaybeUninit<u8>],
    ) {
        i32::try_from(data.len()).expect("string column under 2 GiB");
        let mut chunks = offsets.chunks_exact_mut(4);
        chunks
            .next()
            .expect("the first offset")
            .write_copy_of_slice(&[0; 4]);
        // Every offset written is at most `data.len()`, which fits an i32.
        let mut end = 0i32;
        for &(first, count) in runs {
            let shift = end - self.offsets[first];
            let moved = &self.offsets[first + 1..=first + count];
            // `moved` first: `zip` asks it first, so no chunk is consumed past it.
            for (&offset, chunk) in moved.iter().zip(chunks.by_ref()) {
                chunk.write_copy_of_slice(&(offset + shift).to_le_bytes());
            }
            let text =
                &self.data.as_bytes()[self.offsets[first] as usize..moved[count - 1] as usize];
            data[end as usize..end as usize + text.len()].write_copy_of_slice(text);
            end += text.len() as i32;
        }
        assert!(chunks.next().is_none() && end as usize == data.len());
    }

    /// The offsets buffer as little-endian bytes.
    pub fn offset_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.offset_bytes_len()];
        self.write_offset_bytes(&mut bytes);
        bytes
    }

    /// The length of `offset_bytes`.
    pub fn offset_bytes_len(&self) -> usize {
        self.offsets.len() * 4
    }

    /// Write `offset_bytes` into `out` (`offset_bytes_len` bytes), a word
    /// at a time.
    pub fn write_offset_bytes(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.offset_bytes_len());
        for (bytes, offset) in out.chunks_exact_mut(4).zip(&self.offsets) {
            bytes.copy_from_slice(&offset.to_le_bytes());
        }
    }

    pub fn data(&self) -> &[u8] {
        self.data.as_bytes()
    }
}

/// `rows` (indices into a column) as runs of consecutive indices, `(first,
/// count)`, in order. A batch mostly writes one row per event in order, so
/// a few runs cover it (`StringColumn::gather_runs`).
pub fn runs_of(rows: &[i32]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &row in rows {
        let row = usize::try_from(row).expect("a row index");
        match runs.last_mut() {
            Some((first, count)) if *first + *count == row => *count += 1,
            _ => runs.push((row, 1)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_runs_hold_the_values_of_their_rows_in_order() {
        let mut column = StringColumn::new();
        for value in ["ab", "", "é", "xyz", "q", ""] {
            column.push(value);
        }
        // Repeats, gaps, a step back, an empty value, the last row.
        let rows = [0, 1, 2, 2, 4, 5, 1, 3, 3, 4, 0];
        let runs = runs_of(&rows);
        assert_eq!(
            runs,
            vec![(0, 3), (2, 1), (4, 2), (1, 1), (3, 1), (3, 2), (0, 1)]
        );
        let mut offsets = vec![MaybeUninit::new(0xffu8); (rows.len() + 1) * 4];
        let mut data = vec![MaybeUninit::new(0xffu8); column.runs_len(&runs)];
        column.gather_runs(&runs, &mut offsets, &mut data);
        // SAFETY: `MaybeUninit::new` initialised every byte.
        let bytes = |buffer: Vec<MaybeUninit<u8>>| -> Vec<u8> {
            buffer
                .into_iter()
                .map(|b| unsafe { b.assume_init() })
                .collect()
        };
        let (offsets, data) = (bytes(offsets), bytes(data));
        let mut expected = StringColumn::new();
        for &row in &rows {
            expected.push(column.get(row as usize));
        }
        assert_eq!(data, expected.data());
        assert_eq!(offsets, expected.offset_bytes());
        assert!(runs_of(&[]).is_empty());
    }

    #[test]
    fn offsets_delimit_the_values() {
        let mut column = StringColumn::new();
        column.push("ab");
        column.push("");
        column.push("é");
        assert_eq!(column.len(), 3);
        assert_eq!(column.data(), "abé".as_bytes());
        assert_eq!(column.get(2), "é");
        let offsets: Vec<i32> = column
            .offset_bytes()
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(offsets, vec![0, 2, 2, 4]);
        column.push(&"x".repeat(300));
        assert_eq!(column.offset_bytes()[16..], [0x30, 0x01, 0, 0]);
        assert_eq!(column.offset_bytes().len(), column.offset_bytes_len());
    }
}
