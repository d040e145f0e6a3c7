//! A small WebSocket client for tests: connect (token by header or query), read frames with a
//! timeout, send ops, observe the close code.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What came out of `next_event`.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Closed(Option<u16>),
    Timeout,
}

impl WsClient {
    /// Connects to `url`, sending `bearer` as `Authorization: Bearer …` when given.
    pub async fn connect(url: &str, bearer: Option<&str>) -> Result<Self, Error> {
        let mut request = url.into_client_request()?;
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("token is header-safe"),
            );
        }
        let (stream, _response) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { stream })
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    /// The next text frame, close, or timeout (pings and pongs are skipped).
    pub async fn next_event(&mut self, timeout: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Event::Timeout,
                Ok(None) => return Event::Closed(None),
                Ok(Some(Err(_))) => return Event::Closed(None),
                Ok(Some(Ok(Message::Text(text)))) => return Event::Text(text.to_string()),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Event::Closed(frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next text frame as JSON; panics on close or timeout.
    pub async fn next_json(&mut self, timeout: Duration) -> serde_json::Value {
        match self.next_event(timeout).await {
            Event::Text(text) => serde_json::from_str(&text).expect("frame is JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Asserts nothing arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        match self.next_event(window).await {
            Event::Timeout => {}
            other => panic!("expected no frame, got {other:?}"),
        }
    }

    /// Sends an op and returns the server's answer.
    pub async fn op(&mut self, op: &str, subject: &str) -> serde_json::Value {
        self.send_text(&serde_json::json!({"op": op, "subject": subject}).to_string())
            .await;
        self.next_json(Duration::from_secs(5)).await
    }

    pub async fn close(mut self) {
        let _ = self
            .stream
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}
