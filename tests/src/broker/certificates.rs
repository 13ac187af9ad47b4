//! The certificates of a private node's TLS listener and of its clients, made with the
//! `openssl` command in the node's directory.

use std::process::Command;

use super::PrivateBroker;

impl PrivateBroker {
    /// A certificate for the user `name` signed by the node's CA, and its key: the PEM
    /// files' paths.
    pub fn client_certificate(&self, name: &str) -> (String, String) {
        let (cert, key) = (format!("client-{name}.pem"), format!("client-{name}.key"));
        let csr = format!("client-{name}.csr");
        let subject = format!("/CN={name}");
        // An X.509 v3 certificate (rustls takes no other), for client authentication.
        std::fs::write(
            self.dir.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        self.openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subject,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ]);
        let path = |file: &str| self.dir.join(file).display().to_string();
        (path(&cert), path(&key))
    }

    /// Runs the `openssl` command in the node's directory.
    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A CA, and a certificate for 127.0.0.1 it signs, made with the `openssl` command.
    pub(super) fn make_certificates(&self) {
        let openssl = |args: &[&str]| self.openssl(args);
        std::fs::write(
            self.dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=guirpc test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
    }
}
