//! A bounds-checked reader over a payload: a short payload is a [`DecodeError`], never a panic.

use crate::sensor::DecodeError;

#[derive(Debug, Clone, Copy)]
pub struct Bytes<'a> {
    bytes: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Fails unless the payload has at least `n` bytes.
    pub fn require(&self, n: usize) -> Result<(), DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::new(format!(
                "payload too short: expected at least {n} bytes, got {}",
                self.bytes.len()
            )));
        }
        Ok(())
    }

    pub fn u8(&self, idx: usize) -> Result<u8, DecodeError> {
        self.require(idx + 1)?;
        Ok(self.bytes[idx])
    }

    pub fn i8(&self, idx: usize) -> Result<i8, DecodeError> {
        Ok(self.u8(idx)? as i8)
    }

    pub fn u16_be(&self, idx: usize) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes([self.u8(idx)?, self.u8(idx + 1)?]))
    }

    pub fn i16_be(&self, idx: usize) -> Result<i16, DecodeError> {
        Ok(self.u16_be(idx)? as i16)
    }

    pub fn u16_le(&self, idx: usize) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes([self.u8(idx)?, self.u8(idx + 1)?]))
    }

    pub fn u24_le(&self, idx: usize) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes([self.u8(idx)?, self.u8(idx + 1)?, self.u8(idx + 2)?, 0]))
    }

    pub fn u32_be(&self, idx: usize) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes([self.u8(idx)?, self.u8(idx + 1)?, self.u8(idx + 2)?, self.u8(idx + 3)?]))
    }

    pub fn u32_le(&self, idx: usize) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes([self.u8(idx)?, self.u8(idx + 1)?, self.u8(idx + 2)?, self.u8(idx + 3)?]))
    }

    pub fn bit(&self, idx: usize, bit: u8) -> Result<bool, DecodeError> {
        Ok(self.u8(idx)? >> bit & 1 == 1)
    }

    pub fn as_slice(&self) -> &'a [u8] {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_payloads_are_errors() {
        let bytes = Bytes::new(&[0x01, 0xff]);
        assert_eq!(bytes.i8(1).unwrap(), -1);
        assert_eq!(bytes.u16_be(0).unwrap(), 0x01ff);
        assert_eq!(bytes.u16_le(0).unwrap(), 0xff01);
        let error = bytes.u16_be(1).unwrap_err();
        assert_eq!(error.0, "payload too short: expected at least 3 bytes, got 2");
    }
}
