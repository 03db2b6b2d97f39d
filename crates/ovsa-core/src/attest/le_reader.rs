//! A bounds-checked little-endian reader for the measurement logs (firmware event log, IMA
//! list): every read names the field and the offset of the structure it belongs to, so a short
//! input becomes a precise error, never a panic.

/// A read ran past the end of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short {
    /// Byte offset of the structure being read.
    pub offset: usize,
    /// The field.
    pub what: &'static str,
    /// How many bytes were missing.
    pub needed: usize,
}

/// Reads `buf` from the front.
pub(crate) struct LeReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> LeReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        LeReader { buf, pos: 0 }
    }

    /// Current position.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Whether everything was read.
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next `n` bytes; `start` is the offset of the enclosing structure.
    pub fn take(&mut self, n: usize, what: &'static str, start: usize) -> Result<&'a [u8], Short> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Short {
                offset: start,
                what,
                needed: self.pos.saturating_add(n).saturating_sub(self.buf.len()),
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str, start: usize) -> Result<u8, Short> {
        Ok(self.take(1, what, start)?[0])
    }

    pub fn u16(&mut self, what: &'static str, start: usize) -> Result<u16, Short> {
        let b = self.take(2, what, start)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str, start: usize) -> Result<u32, Short> {
        let b = self.take(4, what, start)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
