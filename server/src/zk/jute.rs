//! Jute, ZooKeeper's binary encoding: `int` 4 bytes big-endian, `long` 8, `boolean` 1;
//! `ustring` and `buffer` an int length (-1: null) and the bytes; `vector` an int count (-1:
//! null) and the elements; a record its fields in order.
//!
//! Hand-written: jute is a few rules over fixed records, no maintained crate speaks it, and a
//! decoder here must treat every length as hostile. A [`Reader`] never allocates more than
//! the bytes it was given can hold (a count or length past what is left is an error before any
//! allocation), never panics, and reports where it stopped.

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JuteError {
    /// The bytes ended inside a field.
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    /// A length or count below -1, or longer than the bytes left.
    #[error("bad length {len} at byte {at}")]
    BadLength {
        /// The length read.
        len: i32,
        /// Where it was read.
        at: usize,
    },
    /// A `ustring` that is not UTF-8.
    #[error("string at byte {0} is not UTF-8")]
    NotUtf8(usize),
    /// A boolean byte other than 0 or 1.
    #[error("bad boolean at byte {0}")]
    BadBool(usize),
    /// Well-formed fields that make no request.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Reads jute fields from one frame's bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], JuteError> {
        if n > self.remaining() {
            return Err(JuteError::Truncated(self.at));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    /// An `int`.
    pub fn int(&mut self) -> Result<i32, JuteError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    /// A `long`.
    pub fn long(&mut self) -> Result<i64, JuteError> {
        let b = self.take(8)?;
        Ok(i64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// A `boolean`.
    pub fn boolean(&mut self) -> Result<bool, JuteError> {
        let at = self.at;
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(JuteError::BadBool(at)),
        }
    }

    /// A length or count that must fit in what is left, each item at least `item_bytes_min`
    /// long; `None` for -1 (null).
    fn length(&mut self, item_bytes_min: usize) -> Result<Option<usize>, JuteError> {
        let at = self.at;
        let len = self.int()?;
        if len == -1 {
            return Ok(None);
        }
        let fits = usize::try_from(len)
            .ok()
            .filter(|n| n.saturating_mul(item_bytes_min) <= self.remaining());
        match fits {
            Some(n) => Ok(Some(n)),
            None => Err(JuteError::BadLength { len, at }),
        }
    }

    /// A `buffer` (null reads as empty).
    pub fn buffer(&mut self) -> Result<Vec<u8>, JuteError> {
        match self.length(1)? {
            Some(n) => Ok(self.take(n)?.to_vec()),
            None => Ok(Vec::new()),
        }
    }

    /// A `buffer` that may be null.
    pub fn nullable_buffer(&mut self) -> Result<Option<Vec<u8>>, JuteError> {
        self.length(1)?
            .map(|n| self.take(n).map(<[u8]>::to_vec))
            .transpose()
    }

    /// A `ustring` (null reads as empty).
    pub fn ustring(&mut self) -> Result<String, JuteError> {
        let at = self.at;
        match self.length(1)? {
            Some(n) => {
                let b = self.take(n)?;
                String::from_utf8(b.to_vec()).map_err(|_| JuteError::NotUtf8(at))
            }
            None => Ok(String::new()),
        }
    }

    /// A `vector` of records (null reads as empty).
    pub fn vector<T: Jute>(&mut self) -> Result<Vec<T>, JuteError> {
        let Some(n) = self.length(T::BYTES_MIN.max(1))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(T::read(self)?);
        }
        Ok(out)
    }

    /// A record.
    pub fn record<T: Jute>(&mut self) -> Result<T, JuteError> {
        T::read(self)
    }
}

/// Writes jute fields.
#[derive(Debug, Default)]
pub struct Writer {
    /// What was written.
    pub bytes: Vec<u8>,
}

impl Writer {
    /// An `int`.
    pub fn int(&mut self, v: i32) {
        self.bytes.extend_from_slice(&v.to_be_bytes());
    }

    /// A `long`.
    pub fn long(&mut self, v: i64) {
        self.bytes.extend_from_slice(&v.to_be_bytes());
    }

    /// A `boolean`.
    pub fn boolean(&mut self, v: bool) {
        self.bytes.push(u8::from(v));
    }

    fn length(&mut self, n: usize) {
        let n = i32::try_from(n).expect("jute lengths fit an int");
        self.int(n);
    }

    /// A `buffer`.
    pub fn buffer(&mut self, v: &[u8]) {
        self.length(v.len());
        self.bytes.extend_from_slice(v);
    }

    /// A null `buffer`.
    pub fn null(&mut self) {
        self.int(-1);
    }

    /// A `ustring`.
    pub fn ustring(&mut self, v: &str) {
        self.buffer(v.as_bytes());
    }

    /// A `vector` of records.
    pub fn vector<T: Jute>(&mut self, v: &[T]) {
        self.length(v.len());
        for item in v {
            item.write(self);
        }
    }

    /// A record.
    pub fn record<T: Jute>(&mut self, v: &T) {
        v.write(self);
    }
}

/// A jute record, or a field type that reads and writes as one.
pub trait Jute: Sized {
    /// The fewest bytes one takes on the wire (bounds a vector's count before allocation).
    const BYTES_MIN: usize;

    /// Reads one.
    fn read(r: &mut Reader<'_>) -> Result<Self, JuteError>;

    /// Writes it.
    fn write(&self, w: &mut Writer);

    /// Its encoding alone.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.bytes
    }
}

impl Jute for i32 {
    const BYTES_MIN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, JuteError> {
        r.int()
    }
    fn write(&self, w: &mut Writer) {
        w.int(*self);
    }
}

impl Jute for i64 {
    const BYTES_MIN: usize = 8;
    fn read(r: &mut Reader<'_>) -> Result<Self, JuteError> {
        r.long()
    }
    fn write(&self, w: &mut Writer) {
        w.long(*self);
    }
}

impl Jute for bool {
    const BYTES_MIN: usize = 1;
    fn read(r: &mut Reader<'_>) -> Result<Self, JuteError> {
        r.boolean()
    }
    fn write(&self, w: &mut Writer) {
        w.boolean(*self);
    }
}

impl Jute for String {
    const BYTES_MIN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, JuteError> {
        r.ustring()
    }
    fn write(&self, w: &mut Writer) {
        w.ustring(self);
    }
}

/// A jute `buffer` field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buffer(pub Vec<u8>);

impl Jute for Buffer {
    const BYTES_MIN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, JuteError> {
        r.buffer().map(Buffer)
    }
    fn write(&self, w: &mut Writer) {
        w.buffer(&self.0);
    }
}

/// A jute `buffer` that may be null: a znode's data, where ZooKeeper keeps null apart from
/// empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Data(pub Option<Vec<u8>>);

impl Data {
    /// Data that is not null.
    pub fn of(bytes: Vec<u8>) -> Data {
        Data(Some(bytes))
    }

    /// The bytes (none for null).
    pub fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl Jute for Data {
    const BYTES_MIN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, JuteError> {
        r.nullable_buffer().map(Data)
    }
    fn write(&self, w: &mut Writer) {
        match &self.0 {
            Some(bytes) => w.buffer(bytes),
            None => w.null(),
        }
    }
}

impl<T: Jute> Jute for Vec<T> {
    const BYTES_MIN: usize = 4;
    fn read(r: &mut Reader<'_>) -> Result<Self, JuteError> {
        r.vector()
    }
    fn write(&self, w: &mut Writer) {
        w.vector(self);
    }
}

/// Declares jute records: a struct whose fields read and write in the order given. Fields
/// are named as `zookeeper.jute` names them (in snake case), which is their documentation.
macro_rules! jute_records {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident { $( pub $field:ident : $ty:ty, )* }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub struct $name { $( pub $field: $ty, )* }

        impl $crate::zk::jute::Jute for $name {
            const BYTES_MIN: usize = 0 $( + <$ty as $crate::zk::jute::Jute>::BYTES_MIN )*;

            #[allow(unused_variables)]
            fn read(r: &mut $crate::zk::jute::Reader<'_>)
                -> Result<Self, $crate::zk::jute::JuteError> {
                Ok($name { $( $field: r.record::<$ty>()?, )* })
            }

            #[allow(unused_variables)]
            fn write(&self, w: &mut $crate::zk::jute::Writer) {
                $( w.record(&self.$field); )*
            }
        }
    )*};
}
pub(crate) use jute_records;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_encode_as_zookeeper_encodes_them() {
        let mut w = Writer::default();
        w.int(-2);
        w.long(0x0102_0304_0506_0708);
        w.boolean(true);
        w.ustring("/a");
        w.buffer(&[]);
        w.null();
        assert_eq!(
            w.bytes,
            [
                0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 0, 0, 2, b'/', b'a', 0, 0, 0,
                0, 0xff, 0xff, 0xff, 0xff
            ]
        );
        let mut r = Reader::new(&w.bytes);
        assert_eq!(r.int(), Ok(-2));
        assert_eq!(r.long(), Ok(0x0102_0304_0506_0708));
        assert_eq!(r.boolean(), Ok(true));
        assert_eq!(r.ustring().as_deref(), Ok("/a"));
        assert_eq!(r.buffer(), Ok(Vec::new()));
        assert_eq!(r.buffer(), Ok(Vec::new()));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        // A vector claiming two billion strings in eight bytes.
        let bytes = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            Reader::new(&bytes).vector::<String>(),
            Err(JuteError::BadLength { .. })
        ));
        assert!(matches!(
            Reader::new(&[0xff, 0xff, 0xff, 0xf0]).buffer(),
            Err(JuteError::BadLength { len: -16, .. })
        ));
        assert_eq!(Reader::new(&[0, 0]).int(), Err(JuteError::Truncated(0)));
        assert_eq!(Reader::new(&[2]).boolean(), Err(JuteError::BadBool(0)));
        assert_eq!(
            Reader::new(&[0, 0, 0, 1, 0xff]).ustring(),
            Err(JuteError::NotUtf8(0))
        );
    }
}
