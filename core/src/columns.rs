//! Arrow-layout column buffers, handed to pyarrow without per-value Python work
//! (`pa.Array.from_buffers` over the raw bytes).

/// A `utf8` column: int32 offsets (one more than rows) and the concatenated bytes.
#[derive(Debug, Default)]
pub struct StringColumn {
    offsets: Vec<i32>,
    data: Vec<u8>,
}

impl StringColumn {
    pub fn new() -> Self {
        StringColumn {
            offsets: vec![0],
            data: Vec::new(),
        }
    }

    /// Append one value. Panics past 2 GiB of text (an Arrow `utf8` limit; a
    /// batch is far smaller).
    pub fn push(&mut self, value: &str) {
        self.data.extend_from_slice(value.as_bytes());
        let end = i32::try_from(self.data.len()).expect("string column under 2 GiB");
        self.offsets.push(end);
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
        &self.data
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
        let offsets: Vec<i32> = column
            .offset_bytes()
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(offsets, vec![0, 2, 2, 4]);
    }
}
