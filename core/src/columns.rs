//! Arrow-layout column buffers, handed to pyarrow without per-value Python work
//! (`pa.Array.from_buffers` over the raw bytes).

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
    pub fn get(&self, i: usize) -> &str {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offsets buffer as little-endian bytes.
    pub fn offset_bytes(&self) -> Vec<u8> {
        self.offsets.iter().flat_map(|o| o.to_le_bytes()).collect()
    }

    pub fn data(&self) -> &[u8] {
        self.data.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
