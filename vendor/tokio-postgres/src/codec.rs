use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend;
use postgres_protocol::message::frontend::CopyData;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use tokio_util::codec::{Decoder, Encoder};

pub enum FrontendMessage {
    Raw(Bytes),
    CopyData(CopyData<Box<dyn Buf + Send>>),
}

pub enum BackendMessage {
    Normal {
        messages: BackendMessages,
        request_complete: bool,
    },
    Async(backend::Message),
}

pub struct BackendMessages(BytesMut);

impl BackendMessages {
    pub fn empty() -> BackendMessages {
        BackendMessages(BytesMut::new())
    }
}

impl FallibleIterator for BackendMessages {
    type Item = backend::Message;
    type Error = io::Error;

    fn next(&mut self) -> io::Result<Option<backend::Message>> {
        backend::Message::parse(&mut self.0)
    }
}

/// What the session is in, shared by the codec that reads the server's answers and the
/// client that sends requests and reports it (added for tenant-schemas): the transaction
/// status byte of the last `ReadyForQuery` (`I`, `T` or `E`), and how many requests are
/// still unanswered (each ends with one `ReadyForQuery`).
#[derive(Debug)]
pub struct SessionState {
    status: AtomicU8,
    in_flight: AtomicUsize,
}

/// [`SessionState`], shared.
pub type TransactionStatus = Arc<SessionState>;

impl SessionState {
    pub fn new() -> TransactionStatus {
        Arc::new(SessionState {
            status: AtomicU8::new(b'I'),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// A request is sent.
    pub fn sent(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A request could not be sent after [`sent`](Self::sent) counted it.
    pub fn unsent(&self) {
        self.answered();
    }

    fn answered(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Every request answered and the last answer said no transaction block is open.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.status.load(Ordering::Acquire) == b'I'
    }
}

pub struct PostgresCodec {
    pub(crate) status: TransactionStatus,
}

impl PostgresCodec {
    pub fn new(status: TransactionStatus) -> PostgresCodec {
        PostgresCodec { status }
    }
}

impl Encoder<FrontendMessage> for PostgresCodec {
    type Error = io::Error;

    fn encode(&mut self, item: FrontendMessage, dst: &mut BytesMut) -> io::Result<()> {
        match item {
            FrontendMessage::Raw(buf) => dst.extend_from_slice(&buf),
            FrontendMessage::CopyData(data) => data.write(dst),
        }

        Ok(())
    }
}

impl Decoder for PostgresCodec {
    type Item = BackendMessage;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BackendMessage>, io::Error> {
        let mut idx = 0;
        let mut request_complete = false;

        while let Some(header) = backend::Header::parse(&src[idx..])? {
            let len = header.len() as usize + 1;
            if src[idx..].len() < len {
                break;
            }

            match header.tag() {
                backend::NOTICE_RESPONSE_TAG
                | backend::NOTIFICATION_RESPONSE_TAG
                | backend::PARAMETER_STATUS_TAG => {
                    if idx == 0 {
                        let message = backend::Message::parse(src)?.unwrap();
                        return Ok(Some(BackendMessage::Async(message)));
                    } else {
                        break;
                    }
                }
                _ => {}
            }

            if header.tag() == backend::READY_FOR_QUERY_TAG {
                // Tag, length (4 bytes), then the status byte.
                if let Some(status) = src.get(idx + 5) {
                    self.status.status.store(*status, Ordering::Release);
                }
                self.status.answered();
                idx += len;
                request_complete = true;
                break;
            }

            idx += len;
        }

        if idx == 0 {
            Ok(None)
        } else {
            Ok(Some(BackendMessage::Normal {
                messages: BackendMessages(src.split_to(idx)),
                request_complete,
            }))
        }
    }
}
