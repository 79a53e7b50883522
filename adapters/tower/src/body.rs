//! [`ScopedBody`]: a response body polled in its request's scope, or a rejection's text.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tenant_schemas::request::RequestScope;

pin_project! {
    /// A response body that is polled inside its request's tenant scope and span, so a
    /// streamed body produced after the handler returned still sees
    /// [`scope::current_schema`](tenant_schemas::scope::current_schema); or the short text
    /// of a rejection.
    pub struct ScopedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Scoped {
            #[pin]
            body: B,
            scope: RequestScope,
        },
        Rejected {
            text: Option<Bytes>,
        },
    }
}

impl<B> ScopedBody<B> {
    pub(crate) fn scoped(body: B, scope: RequestScope) -> Self {
        Self {
            kind: Kind::Scoped { body, scope },
        }
    }

    pub(crate) fn rejected(text: Cow<'static, str>) -> Self {
        let bytes = match text {
            Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
            Cow::Owned(s) => Bytes::from(s),
        };
        Self {
            kind: Kind::Rejected { text: Some(bytes) },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ScopedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Scoped { body, scope } => scope.in_scope(|| body.poll_frame(cx)),
            KindProj::Rejected { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Scoped { body, .. } => body.is_end_stream(),
            Kind::Rejected { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Scoped { body, .. } => body.size_hint(),
            Kind::Rejected { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}
