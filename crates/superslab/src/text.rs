//! Composing one line of text on the stack and writing it to a file
//! descriptor: how every layer reports (warnings, misuse, heap corruption,
//! statistics) without allocating.

/// One line of text in a fixed stack buffer; what does not fit is cut.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }

    /// Appends bytes.
    pub fn push(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }

    /// Appends a string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.push(s.as_bytes())
    }

    /// Appends a number in decimal.
    pub fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&tmp[i..])
    }

    /// Appends a number right-aligned in a field of `width` characters.
    pub fn dec_width(&mut self, v: u64, width: usize) -> &mut Self {
        let digits = if v == 0 { 1 } else { v.ilog10() as usize + 1 };
        for _ in digits..width {
            self.push(b" ");
        }
        self.dec(v)
    }

    /// Appends an address as `0x` and 16 hex digits.
    pub fn hex(&mut self, v: usize) -> &mut Self {
        let mut tmp = *b"0x0000000000000000";
        for (i, d) in tmp[2..].iter_mut().enumerate() {
            *d = b"0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
        }
        self.push(&tmp)
    }

    /// Writes the line to `fd`, ignoring errors (there is nowhere to report
    /// them).
    pub fn write_to(&self, fd: i32) {
        let bytes = &self.buf[..self.len];
        let mut done = 0;
        while done < bytes.len() {
            // SAFETY: the slice is valid for its length; a closed fd makes
            // write fail harmlessly.
            let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
            if n <= 0 {
                return;
            }
            done += n as usize;
        }
    }

    /// Writes the line to stderr.
    pub fn write_stderr(&self) {
        self.write_to(2);
    }
}
