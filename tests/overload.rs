//! The room's memory budget on every backend: members that stop reading
//! while a publisher goes on pass --max-backlog-total together (none of
//! them alone passes --max-backlog) and are closed with 1013, try again
//! later, after everything queued before it; the member that reads keeps
//! every message, and the server's room backlog falls back within budget.

mod common;

use common::*;
use tungstenite::Message;

const MESSAGES: usize = 1500;
const SIZE: usize = 8 * 1024;

every_backend! {
    fn members_past_the_room_budget_get_1013_and_the_reader_keeps_everything(backend: Backend) {
        let server = Server::start(
            backend,
            &["--max-backlog", "64MiB", "--max-backlog-total", "2MiB"],
        );
        let mut silent: Vec<RawWs> = (0..4).map(|_| RawWs::connect(&server, "/room")).collect();
        let mut publisher = ws_connect(&server, "/room");
        for i in 0..MESSAGES {
            let message = Message::binary(vec![(i % 251) as u8; SIZE]);
            publisher.send(message.clone()).expect("send");
            assert_eq!(read_data(&mut publisher), message, "message {i}");
        }
        // 12 MiB went to each silent member: more than the kernel's buffers
        // hold, so their queues in the server passed the budget together.
        for member in &mut silent {
            let mut received = 0;
            let code = loop {
                let (opcode, payload) = member.read_frame().expect("frames, then a close");
                match opcode {
                    0x2 => received += 1,
                    0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
                    other => panic!("opcode {other}"),
                }
            };
            assert_eq!(code, 1013);
            assert!(received < MESSAGES, "shed before the end");
        }
        let stats = server.wait_for_stats("the shed members gone", |s| s.open == 1);
        assert_eq!(stats.totals.overload_closes, 4);
        assert_eq!(stats.totals.backlog_closes, 0);
        assert!(stats.totals.room_backlog_bytes <= 2 << 20, "{}", stats.totals.room_backlog_bytes);
        assert_echo_in_room(&mut publisher);
    }
}

/// The member that kept reading is still a member.
fn assert_echo_in_room(ws: &mut Ws) {
    let message = Message::text("still here");
    ws.send(message.clone()).expect("send");
    assert_eq!(read_data(ws), message);
}
