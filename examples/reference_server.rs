//! A small tokio-tungstenite server that speaks the benchmark protocol
//! (`/echo`, `/room`; see docs/protocol.md): the baseline `fanout load` and
//! `fanout bench` compare against, and proof that the load generator works
//! against a server that is not ours.
//!
//! Run: `cargo run --release --example reference_server -- 127.0.0.1:9002`
//! It prints `ready <addr>` once listening and stops on SIGINT/SIGTERM.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

/// Room messages buffered per member before a slow member starts losing them.
const ROOM_BUFFER: usize = 4096;

#[derive(Clone, Copy, PartialEq)]
enum Route {
    Echo,
    Room,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into())
        .parse()
        .expect("usage: reference_server [ADDR]");
    let listener = TcpListener::bind(addr).await?;
    println!("ready {}", listener.local_addr()?);
    let (room, _) = broadcast::channel::<Message>(ROOM_BUFFER);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, room.clone()));
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
}

async fn serve(stream: TcpStream, room: broadcast::Sender<Message>) {
    // Subscribed before the 101 goes out, so a message sent after the client
    // has read its 101 cannot be missed (docs/protocol.md).
    let inbox = room.subscribe();
    let mut route = None;
    // The callback's signature is tungstenite's; its error type is large by design.
    #[allow(clippy::result_large_err)]
    let choose = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        route = match request.uri().path() {
            "/echo" => Some(Route::Echo),
            "/room" => Some(Route::Room),
            _ => None,
        };
        if route.is_none() {
            let mut refused = ErrorResponse::new(None);
            *refused.status_mut() = StatusCode::NOT_FOUND;
            return Err(refused);
        }
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, choose).await else {
        return;
    };
    match route {
        Some(Route::Echo) => echo(ws).await,
        Some(Route::Room) => member(ws, room, inbox).await,
        None => {}
    }
}

async fn echo(mut ws: tokio_tungstenite::WebSocketStream<TcpStream>) {
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

async fn member(
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    room: broadcast::Sender<Message>,
    mut inbox: broadcast::Receiver<Message>,
) {
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            incoming = source.next() => match incoming {
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    let _ = room.send(message);
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            outgoing = inbox.recv() => match outgoing {
                Ok(message) => {
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
                // A member too slow for the buffer is dropped, like fanout's 1008.
                Err(_) => return,
            },
        }
    }
}
