//! Path resolution confined to a root directory, for the OCI layer code: the one resolver now
//! lives in [`crate::image::inroot`] (unpacking images and `%files` use it too).

pub use crate::image::inroot::*;
