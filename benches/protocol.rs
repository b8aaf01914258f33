//! Protocol hot paths: frame decode (header + unmask + UTF-8 where text),
//! frame encode, masking, handshake parse, raw-TCP decode.
//! Run: `cargo bench --bench protocol`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

use fanout::protocol::frame::{apply_mask, client_frame, server_frame, OpCode, Role};
use fanout::protocol::handshake::parse_request;
use fanout::protocol::message::read_frame;
use fanout::protocol::tcp;

const SIZES: [usize; 3] = [32, 1024, 64 * 1024];

fn frame_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_decode");
    for size in SIZES {
        for opcode in [OpCode::Binary, OpCode::Text] {
            let frame = client_frame(opcode, &vec![b'a'; size], [1, 2, 3, 4]);
            group.throughput(Throughput::Bytes(size as u64));
            let id = BenchmarkId::new(format!("{opcode:?}").to_lowercase(), size);
            group.bench_with_input(id, &frame, |b, frame| {
                let mut buf = frame.clone();
                b.iter(|| {
                    // Unmasking is in place, so each pass restores the masked bytes.
                    buf.copy_from_slice(frame);
                    let mut fragments = None;
                    let step =
                        read_frame(black_box(&mut buf), Role::Server, 1 << 20, &mut fragments);
                    black_box(step.unwrap().unwrap().consumed)
                })
            });
        }
    }
    group.finish();
}

fn frame_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_encode");
    for size in SIZES {
        let payload = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            b.iter(|| server_frame(OpCode::Binary, black_box(payload)))
        });
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    let mut buf = vec![0u8; 64 * 1024];
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("65536", |b| {
        b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4]))
    });
    group.finish();
}

fn handshake_parse(c: &mut Criterion) {
    let request = b"GET /room HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:9001\r\nSec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: keep-alive, Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nUpgrade: websocket\r\n\r\n";
    c.bench_function("handshake_parse/browser_request", |b| {
        b.iter(|| parse_request(black_box(request), 8192).unwrap())
    });
}

fn tcp_decode(c: &mut Criterion) {
    let message = tcp::encode(&[3u8; 32]);
    c.bench_function("tcp_decode/32", |b| {
        b.iter(|| {
            tcp::decode(black_box(&message), 1 << 20)
                .unwrap()
                .unwrap()
                .1
        })
    });
}

criterion_group!(
    benches,
    frame_decode,
    frame_encode,
    mask,
    handshake_parse,
    tcp_decode
);
criterion_main!(benches);
