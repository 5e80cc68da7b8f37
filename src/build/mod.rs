//! Building images: turning image sources (OCI registries, OCI layouts and archives,
//! definition files) into a root filesystem plus Apptainer's container metadata.

pub mod oci;
