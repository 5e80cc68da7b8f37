//! The SIF writer rebuilds the reference fixtures (made by the Go library's
//! `gen_sifs.go`) byte for byte from their inputs: creation defaults, placement,
//! alignment, padding accounting, metadata encoding and write order all match.

mod common;

use common::sif_fixture;
use sifr::image::sif::{
    Arch, CreateOptions, CryptoMessageMeta, DataType, Extra, FormatType, FsType, ImageId,
    MessageType, ObjectInput, PartType, PartitionMeta, SbomFormat, SifImage, When,
};

struct Obj {
    dt: DataType,
    data: Vec<u8>,
    group: Option<u32>,
    name: &'static str,
    extra: Extra,
}

fn obj(dt: DataType, data: Vec<u8>) -> Obj {
    Obj {
        dt,
        data,
        group: Some(1),
        name: "",
        extra: Extra::None,
    }
}

fn part(data: Vec<u8>, fs: FsType, pt: PartType, arch: Arch, group: u32) -> Obj {
    Obj {
        group: Some(group),
        extra: Extra::Partition(PartitionMeta {
            fs_type: fs,
            part_type: pt,
            arch_code: arch.code(),
        }),
        ..obj(DataType::Partition, data)
    }
}

fn input(name: &str) -> Vec<u8> {
    std::fs::read(sif_fixture("input").join(name)).expect("read input")
}

fn build(opts: CreateOptions, when: When, objs: Vec<Obj>) -> Vec<u8> {
    let mut img = SifImage::create_in_memory("built.sif", &opts).expect("create");
    for o in objs {
        let mut data: &[u8] = &o.data;
        let mut i = ObjectInput::new(o.dt, &mut data);
        i.group = o.group;
        i.name = o.name.as_bytes().to_vec();
        i.extra = o.extra;
        img.add_object(i, when).expect("add");
    }
    img.as_bytes().expect("in memory").to_vec()
}

fn assert_same(fixture: &str, built: Vec<u8>) {
    let want = std::fs::read(sif_fixture(fixture)).expect("read fixture");
    assert_eq!(built.len(), want.len(), "{fixture}: length differs");
    if let Some(i) = built.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{fixture}: first difference at byte {i}");
    }
}

fn det() -> CreateOptions {
    CreateOptions::deterministic()
}

#[test]
fn test_rebuild_empty_images() {
    assert_same("empty.sif", build(det(), When::Auto, vec![]));
    let id = uuid::Uuid::parse_str("3fa802cc-358b-45e3-bcc0-69dc7a45f9f8").expect("uuid");
    let opts = CreateOptions {
        id: ImageId::Given(id),
        ..det()
    };
    assert_same("empty-id.sif", build(opts, When::Auto, vec![]));
    let opts = CreateOptions {
        launch_script: b"#!/usr/bin/env run-script\n".to_vec(),
        ..det()
    };
    assert_same("empty-launch-script.sif", build(opts, When::Auto, vec![]));
}

#[test]
fn test_rebuild_one_object_images() {
    let json = || Obj {
        name: "data.json",
        ..obj(DataType::GenericJson, b"{}".to_vec())
    };
    assert_same(
        "one-object-generic-json.sif",
        build(det(), When::Auto, vec![json()]),
    );
    let t = 1_593_475_316;
    let opts = CreateOptions {
        id: ImageId::Nil,
        time: When::At(t),
        ..CreateOptions::default()
    };
    assert_same(
        "one-object-time.sif",
        build(opts, When::At(t), vec![json()]),
    );
    let crypt = Obj {
        extra: Extra::CryptoMessage(CryptoMessageMeta {
            format: FormatType::OpenPgp,
            message: MessageType::ClearSignature,
        }),
        ..obj(DataType::CryptoMessage, vec![0xfe, 0xfe, 0xf0, 0xf0])
    };
    assert_same(
        "one-object-crypt-message.sif",
        build(det(), When::Auto, vec![crypt]),
    );
    let sbom = Obj {
        extra: Extra::Sbom(SbomFormat::CycloneDxJson),
        ..obj(DataType::Sbom, input("sbom.cdx.json"))
    };
    assert_same("one-object-sbom.sif", build(det(), When::Auto, vec![sbom]));
    // The OCI digests are computed by the writer.
    assert_same(
        "one-object-oci-root-index.sif",
        build(
            det(),
            When::Auto,
            vec![obj(DataType::OciRootIndex, input("index.json"))],
        ),
    );
    assert_same(
        "one-object-oci-blob.sif",
        build(
            det(),
            When::Auto,
            vec![obj(DataType::OciBlob, input("oci-config.json"))],
        ),
    );
}

#[test]
fn test_rebuild_partition_images() {
    let group1 = || {
        vec![
            part(
                vec![0xfa, 0xce, 0xfe, 0xed],
                FsType::Raw,
                PartType::System,
                Arch::I386,
                1,
            ),
            part(
                input("root.squashfs"),
                FsType::Squashfs,
                PartType::PrimSys,
                Arch::I386,
                1,
            ),
        ]
    };
    assert_same("one-group.sif", build(det(), When::Auto, group1()));
    let mut objs = group1();
    objs.push(part(
        input("root.ext3"),
        FsType::Ext3,
        PartType::System,
        Arch::Amd64,
        2,
    ));
    assert_same("two-groups.sif", build(det(), When::Auto, objs));
}

#[test]
fn test_fixture_queries() {
    let img = SifImage::open(sif_fixture("busybox_amd64.sif")).expect("open");
    let root = img.primary_partition().expect("one").expect("rootfs");
    assert_eq!((root.id, root.offset, root.size), (4, 45056, 745472));
    assert_eq!((root.fs_type, root.arch), (FsType::Squashfs, Arch::Amd64));
    img.check_partition_header(&root).expect("squashfs");
    let meta = img
        .find_object(DataType::GenericJson, "inspect-metadata.json")
        .expect("inspect metadata");
    let json = img.read_object(meta, 1 << 20).expect("read");
    assert!(json.starts_with(b"{"));
    let def = img
        .objects_of_type(DataType::Deffile)
        .next()
        .expect("deffile");
    assert_eq!(
        img.read_object(def, 1 << 20).expect("read"),
        b"BootStrap: docker\nFrom: busybox:1.33.1\n"
    );
    assert_eq!(img.group_ids(), [1]);
    let sig = img
        .objects_of_type(DataType::Signature)
        .next()
        .expect("sig");
    assert_eq!(img.relative_id(sig), 0);

    // The legacy images: 4-byte "deadbeef" PrimSys partitions fail the squashfs check.
    let img = SifImage::open(sif_fixture("one-group-signed-legacy.sif")).expect("open");
    let root = img.primary_partition().expect("one").expect("rootfs");
    assert!(img.check_partition_header(&root).is_err());
    // Relative IDs of a two-group image.
    let img = SifImage::open(sif_fixture("two-groups-signed-pgp.sif")).expect("open");
    let rel: Vec<(u32, u32)> = img.objects().map(|d| (d.id, img.relative_id(d))).collect();
    assert_eq!(rel, [(1, 0), (2, 1), (3, 0), (4, 0), (5, 1)]);
}
