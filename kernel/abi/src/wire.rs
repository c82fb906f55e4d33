//! Wire formats as `#[repr(C)]` structs, read and written in safe code.
//!
//! A format's records are declared with [`wire_struct!`]: a `#[repr(C)]` struct of plain
//! integer fields and byte arrays (padding and reserved bytes are fields too), whose size and
//! every field's offset are asserted at compile time against the numbers the format documents.
//! The struct is the layout; bytes are never reinterpreted as it. [`Wire::read`] builds one
//! field by field, each from little-endian bytes at the field's `offset_of!` position, and
//! [`Wire::write`] puts it back the same way, so untrusted bytes need no `unsafe` and no
//! alignment.

/// A value with a fixed little-endian encoding of `size_of::<Self>()` bytes.
pub trait Wire: Copy {
    /// The value encoded at `bytes[at..at + size_of::<Self>()]`; panics if that is out of
    /// range (callers check the bounds first, or use [`read_at`]).
    fn read(bytes: &[u8], at: usize) -> Self;

    /// Encodes the value at `bytes[at..at + size_of::<Self>()]`; panics if that is out of range.
    fn write(self, bytes: &mut [u8], at: usize);
}

/// The value encoded at `at`, if all of it lies inside `bytes`.
pub fn read_at<T: Wire>(bytes: &[u8], at: usize) -> Option<T> {
    bytes.get(at..at.checked_add(size_of::<T>())?)?;
    Some(T::read(bytes, at))
}

macro_rules! wire_integer {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn read(bytes: &[u8], at: usize) -> Self {
                let mut le = [0; size_of::<$t>()];
                le.copy_from_slice(&bytes[at..at + size_of::<$t>()]);
                <$t>::from_le_bytes(le)
            }

            fn write(self, bytes: &mut [u8], at: usize) {
                bytes[at..at + size_of::<$t>()].copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

wire_integer!(u8, u16, u32, u64);

impl<T: Wire, const N: usize> Wire for [T; N] {
    fn read(bytes: &[u8], at: usize) -> Self {
        core::array::from_fn(|i| T::read(bytes, at + i * size_of::<T>()))
    }

    fn write(self, bytes: &mut [u8], at: usize) {
        for (i, item) in self.into_iter().enumerate() {
            item.write(bytes, at + i * size_of::<T>());
        }
    }
}

/// Declares a wire record: the struct (give it `#[repr(C)]`, or `#[repr(C, packed(N))]` for a
/// format with fields below their natural alignment), compile-time assertions of its size and
/// of each field's offset, and its [`Wire`] implementation.
///
/// ```ignore
/// wire_struct! {
///     /// A record.
///     #[repr(C)]
///     pub struct Record(16) {
///         pub id: u32 = 0,
///         pub _pad: [u8; 4] = 4,
///         pub size: u64 = 8,
///     }
/// }
/// ```
#[macro_export]
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($size:expr) {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty = $at:expr),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }

        const _: () = assert!(core::mem::size_of::<$name>() == $size);
        $(const _: () = assert!(core::mem::offset_of!($name, $field) == $at);)*

        impl $name {
            /// Bytes of the record on the wire.
            pub const SIZE: usize = $size;
        }

        impl $crate::wire::Wire for $name {
            fn read(bytes: &[u8], at: usize) -> Self {
                Self {
                    $($field: $crate::wire::Wire::read(
                        bytes,
                        at + core::mem::offset_of!($name, $field),
                    )),*
                }
            }

            fn write(self, bytes: &mut [u8], at: usize) {
                $($crate::wire::Wire::write(
                    { self.$field },
                    bytes,
                    at + core::mem::offset_of!($name, $field),
                );)*
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    wire_struct! {
        /// A test record with padding and a field below its natural alignment.
        #[repr(C, packed(2))]
        struct Sample(16) {
            tag: u16 = 0,
            value: u32 = 2,
            pad: [u8; 2] = 6,
            big: u64 = 8,
        }
    }

    #[test]
    fn round_trips_little_endian() {
        let s = Sample {
            tag: 0x0102,
            value: 0x0304_0506,
            pad: [0, 0],
            big: 0x0708_090a_0b0c_0d0e,
        };
        let mut b = [0u8; 2 + Sample::SIZE];
        s.write(&mut b, 2);
        assert_eq!(
            b,
            [
                0, 0, 0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0, 0, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09,
                0x08, 0x07
            ]
        );
        assert_eq!(Sample::read(&b, 2), s);
        assert_eq!(read_at::<Sample>(&b, 2), Some(s));
        assert_eq!(read_at::<Sample>(&b, 3), None);
        assert_eq!(read_at::<Sample>(&b, usize::MAX), None);
    }
}
