//! An HTTP/1.1 client for testing an application over real HTTP, whichever framework
//! serves it.

use super::tenant::TempTenant;

/// An HTTP/1.1 client whose requests go to one tenant's host, for testing an application
/// over real HTTP on 127.0.0.1 (whichever framework serves it).
///
/// Each request opens a connection, sends `Host: <host>` and `Connection: close`, and
/// reads the whole response. [`TenantClient::raw`] sends bytes as they are, for malformed
/// requests no ordinary client would send.
#[derive(Debug, Clone)]
pub struct TenantClient {
    addr: std::net::SocketAddr,
    host: String,
}

/// A response read by [`TenantClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The body as text (lossy UTF-8).
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (lowercase).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl TenantClient {
    /// A client for the server at `addr`, sending `Host: <host>`.
    pub fn new(addr: std::net::SocketAddr, host: impl Into<String>) -> Self {
        Self {
            addr,
            host: host.into(),
        }
    }

    /// A client for `tenant`'s host.
    #[must_use]
    pub fn for_tenant(addr: std::net::SocketAddr, tenant: &TempTenant) -> Self {
        Self::new(addr, tenant.host().as_str())
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> std::io::Result<TestResponse> {
        self.send("GET", path, &[], b"").await
    }

    /// `POST path` with a body of `content_type`.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> std::io::Result<TestResponse> {
        self.send("POST", path, &[("content-type", content_type)], body)
            .await
    }

    /// Any request, with extra headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<TestResponse> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        for (name, value) in headers {
            request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        Self::raw(self.addr, &request).await
    }

    /// Sends `request` exactly as given and reads the response.
    pub async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<TestResponse> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request).await?;
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).await?;
            Ok::<_, std::io::Error>(bytes)
        };
        let bytes = tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 30 s")
            })??;
        parse_response(&bytes)
    }
}

fn parse_response(bytes: &[u8]) -> std::io::Result<TestResponse> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the response"))?;
    let head =
        std::str::from_utf8(&bytes[..split]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw_body = &bytes[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body).ok_or_else(|| bad("malformed chunked body"))?
    } else {
        raw_body.to_vec()
    };
    Ok(TestResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
