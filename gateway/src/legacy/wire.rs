//! The classic (non-flexible) Kafka primitive types, read from a request
//! body and written to a response body. Every length and count read off the
//! wire is checked against the bytes that are actually left before anything
//! is allocated for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;

/// Why an old-version request body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The body ended inside a field.
    #[error("request body truncated")]
    Truncated,
    /// A length or count is negative where null is not allowed, or larger
    /// than the bytes left.
    #[error("invalid length {0}")]
    Length(i64),
    /// A string is not UTF-8.
    #[error("string is not UTF-8")]
    Utf8,
}

/// Reads classic primitive types from a request body.
pub struct Reader<'a> {
    buf: &'a mut Bytes,
}

impl<'a> Reader<'a> {
    /// A reader consuming `buf` from its start.
    pub fn new(buf: &'a mut Bytes) -> Self {
        Self { buf }
    }

    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// An INT8.
    pub fn i8(&mut self) -> Result<i8, WireError> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }

    /// A BOOLEAN (any non-zero byte is true, as in Kafka).
    pub fn bool(&mut self) -> Result<bool, WireError> {
        Ok(self.i8()? != 0)
    }

    /// An INT16.
    pub fn i16(&mut self) -> Result<i16, WireError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    /// An INT32.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    /// An INT64.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    /// `n` raw bytes, shared with the body (no copy).
    fn take(&mut self, n: i64) -> Result<Bytes, WireError> {
        let len = usize::try_from(n).map_err(|_| WireError::Length(n))?;
        if len > self.buf.remaining() {
            return Err(WireError::Length(n));
        }
        Ok(self.buf.split_to(len))
    }

    /// A NULLABLE_STRING (length -1 is null).
    pub fn nullable_string(&mut self) -> Result<Option<StrBytes>, WireError> {
        let len = self.i16()?;
        if len == -1 {
            return Ok(None);
        }
        let bytes = self.take(i64::from(len))?;
        StrBytes::from_utf8(bytes)
            .map(Some)
            .map_err(|_| WireError::Utf8)
    }

    /// A STRING.
    pub fn string(&mut self) -> Result<StrBytes, WireError> {
        self.nullable_string()?.ok_or(WireError::Length(-1))
    }

    /// NULLABLE_BYTES (length -1 is null).
    pub fn nullable_bytes(&mut self) -> Result<Option<Bytes>, WireError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        self.take(i64::from(len)).map(Some)
    }

    /// An ARRAY whose elements are read by `element`; a null array (count
    /// -1) is `None`. The count is checked against the bytes left (every
    /// element takes at least `min_element` bytes) before any allocation.
    pub fn nullable_array<T>(
        &mut self,
        min_element: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Option<Vec<T>>, WireError> {
        let n = self.i32()?;
        if n == -1 {
            return Ok(None);
        }
        let count = usize::try_from(n).map_err(|_| WireError::Length(n.into()))?;
        if count.saturating_mul(min_element.max(1)) > self.buf.remaining() {
            return Err(WireError::Length(n.into()));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(Some(out))
    }

    /// A non-null ARRAY (see [`Self::nullable_array`]).
    pub fn array<T>(
        &mut self,
        min_element: usize,
        element: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        self.nullable_array(min_element, element)?
            .ok_or(WireError::Length(-1))
    }
}

/// Writes classic primitive types to a response body.
pub trait Writer {
    /// A STRING or, for `None`, a null NULLABLE_STRING.
    fn put_str(&mut self, s: Option<&str>);
    /// An ARRAY's count (saturating: our arrays never reach i32::MAX).
    fn put_count(&mut self, n: usize);
    /// NULLABLE_BYTES.
    fn put_nullable_bytes(&mut self, b: Option<&[u8]>);
}

impl Writer for BytesMut {
    fn put_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                // Cut to the longest prefix a STRING can hold, on a char boundary.
                let mut end = s.len().min(i16::MAX as usize);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                let s = &s[..end];
                self.put_i16(s.len() as i16);
                self.put_slice(s.as_bytes());
            }
            None => self.put_i16(-1),
        }
    }

    fn put_count(&mut self, n: usize) {
        self.put_i32(i32::try_from(n).unwrap_or(i32::MAX));
    }

    fn put_nullable_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.put_count(b.len());
                self.put_slice(b);
            }
            None => self.put_i32(-1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_lengths_beyond_the_body_are_refused_before_allocating() {
        let mut b = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        let r = Reader::new(&mut b).array(4, |r| r.i32());
        assert_eq!(r, Err(WireError::Length(i32::MAX.into())));
        let mut b = Bytes::from_static(&[0x00, 0x05, b'a']);
        assert_eq!(Reader::new(&mut b).string(), Err(WireError::Length(5)));
        let mut b = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(Reader::new(&mut b).nullable_string(), Ok(None));
        let mut b = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(Reader::new(&mut b).string(), Err(WireError::Length(-1)));
    }

    #[test]
    fn written_values_read_back() {
        let mut out = BytesMut::new();
        out.put_str(Some("topic"));
        out.put_str(None);
        out.put_nullable_bytes(Some(b"xy"));
        out.put_count(2);
        out.put_i32(7);
        out.put_i32(8);
        let mut b = out.freeze();
        let mut r = Reader::new(&mut b);
        assert_eq!(r.string().map(|s| s.to_string()), Ok("topic".into()));
        assert_eq!(r.nullable_string(), Ok(None));
        assert_eq!(r.nullable_bytes(), Ok(Some(Bytes::from_static(b"xy"))));
        assert_eq!(r.array(4, |r| r.i32()), Ok(vec![7, 8]));
    }
}
