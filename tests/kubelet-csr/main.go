// Command kubelet-csr drives the kubelet's own certificate code against a live cluster, so
// kpki's tests exercise the Certificates API exactly as a kubelet does:
//
//	kubelet-csr bootstrap     TLS bootstrap with a bootstrap token (the kubelet's
//	                          bootstrap.LoadClientCert): writes the cert dir and kubeconfig
//	kubelet-csr rotate-client a client certificate rotation by the kubelet's client
//	                          certificate manager, authenticated as the node
//	kubelet-csr serving       a kubernetes.io/kubelet-serving certificate by the kubelet's
//	                          serving certificate manager, authenticated as the node
//	kubelet-csr register-node creates or updates the node's own Node object, as the node
//
// Every subcommand prints `csr: <name>` as soon as its request exists, then on success the
// certificate's subject, serial and validity (bootstrap prints `skipped: …` instead of a
// request when its kubeconfig already holds a valid certificate, as the kubelet skips it). On failure it prints one line on stderr and
// exits 1 (2 for bad flags). The libraries log to --log-file (nothing is logged otherwise).
//
// Built by scripts/build-kubelet-csr against the Kubernetes release pinned in
// scripts/peers.env.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientset "k8s.io/client-go/kubernetes"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletcertificate "k8s.io/kubernetes/pkg/kubelet/certificate"
	"k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"
)

const usage = `usage: kubelet-csr <bootstrap|rotate-client|serving|register-node> [flags]
  bootstrap     --bootstrap-kubeconfig F --kubeconfig F --cert-dir D --node-name N [--timeout 2m]
  rotate-client --kubeconfig F --cert-dir D --node-name N [--timeout 2m]
  serving       --kubeconfig F --cert-dir D --node-name N --ip A [--ip A…] [--dns D…] [--hostname H] [--timeout 2m]
  register-node --kubeconfig F --node-name N [--hostname H] [--internal-ip A…] [--external-ip A…] [--internal-dns D…] [--external-dns D…]
every subcommand also takes --log-file F (the Kubernetes libraries' log)`

// list is a repeatable (and comma-separated) string flag.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }

func (l *list) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// usageError is a bad command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	cmd := os.Args[1]
	run, ok := map[string]func([]string) error{
		"bootstrap":     runBootstrap,
		"rotate-client": runRotateClient,
		"serving":       runServing,
		"register-node": runRegisterNode,
	}[cmd]
	if !ok {
		fmt.Fprintf(os.Stderr, "kubelet-csr: unknown subcommand %q\n%s\n", cmd, usage)
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "kubelet-csr %s: %s\n", cmd, oneLine(err.Error()))
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// common are the flags every subcommand shares.
type common struct {
	fs         *flag.FlagSet
	kubeconfig string
	certDir    string
	nodeName   string
	timeout    time.Duration
	logFile    string
}

func newCommon(name string) *common {
	c := &common{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.SetOutput(io.Discard)
	c.fs.StringVar(&c.kubeconfig, "kubeconfig", "", "the node's kubeconfig")
	c.fs.StringVar(&c.nodeName, "node-name", "", "the node's name")
	c.fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "how long to wait for the certificate")
	c.fs.StringVar(&c.logFile, "log-file", "", "where the Kubernetes libraries log")
	return c
}

func (c *common) withCertDir() *common {
	c.fs.StringVar(&c.certDir, "cert-dir", "", "the kubelet's certificate directory")
	return c
}

// parse reads the flags, checks the required ones and sets up logging.
func (c *common) parse(args []string, required ...string) error {
	if err := c.fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if c.fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", c.fs.Arg(0))}
	}
	for _, name := range required {
		if f := c.fs.Lookup(name); f == nil || f.Value.String() == "" {
			return usageError{fmt.Sprintf("--%s is required", name)}
		}
	}
	if c.timeout <= 0 {
		return usageError{"--timeout must be positive"}
	}
	return setupLogging(c.logFile)
}

// recorder keeps what the libraries reported: the request's name and the last error.
type recorder struct {
	mu      sync.Mutex
	csr     string
	lastErr string
	out     io.Writer
}

var rec = &recorder{out: io.Discard}

func (r *recorder) request() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.csr
}

func (r *recorder) lastError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// sawRequest notes the request's name (printed once, as soon as it is known).
func (r *recorder) sawRequest(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "" || name == r.csr {
		return
	}
	r.csr = name
	fmt.Printf("csr: %s\n", name)
}

// sink is the logr sink of klog and of every contextual logger: it writes the log file and
// picks the request's name from the "csr" value the csr package logs.
type sink struct {
	name   string
	values []any
}

func (s sink) Init(logr.RuntimeInfo) {}

func (s sink) Enabled(level int) bool { return level <= 4 }

func (s sink) Info(level int, msg string, kv ...any) { s.write("I", nil, msg, kv) }

func (s sink) Error(err error, msg string, kv ...any) { s.write("E", err, msg, kv) }

func (s sink) WithValues(kv ...any) logr.LogSink {
	s.values = append(append([]any{}, s.values...), kv...)
	return s
}

func (s sink) WithName(name string) logr.LogSink {
	if s.name != "" {
		name = s.name + "/" + name
	}
	s.name = name
	return s
}

func (s sink) write(kind string, err error, msg string, kv []any) {
	all := append(append([]any{}, s.values...), kv...)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s: %q", kind, time.Now().UTC().Format(time.RFC3339Nano), s.name, msg)
	if err != nil {
		fmt.Fprintf(&b, " err=%q", err.Error())
	}
	for i := 0; i+1 < len(all); i += 2 {
		fmt.Fprintf(&b, " %v=%v", all[i], all[i+1])
		if k, _ := all[i].(string); k == "csr" {
			switch v := all[i+1].(type) {
			case string:
				rec.sawRequest(v)
			case klog.ObjectRef:
				rec.sawRequest(v.Name)
			}
		}
	}
	rec.mu.Lock()
	fmt.Fprintln(rec.out, b.String())
	rec.mu.Unlock()
}

// setupLogging routes klog (and so every contextual logger) to the sink, and records each
// error the libraries report without returning it (the certificate manager reports its
// failures that way).
func setupLogging(path string) error {
	if path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("log file %s: %v", path, err)
		}
		rec.out = f
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", "4")
	klog.SetLogger(logr.New(sink{}))
	utilruntime.ErrorHandlers = append(utilruntime.ErrorHandlers,
		func(_ context.Context, err error, msg string, _ ...any) {
			text := msg
			if err != nil {
				text = msg + ": " + err.Error()
			}
			rec.mu.Lock()
			rec.lastErr = text
			rec.mu.Unlock()
		})
	return nil
}

// loadConfig reads a kubeconfig as the kubelet does.
func loadConfig(path string) (*restclient.Config, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %v", path, err)
	}
	return cfg, nil
}

// describe states where request `name` stands, from the API.
func describe(client clientset.Interface, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Sprintf("could not be read back: %v", err)
	}
	approved := false
	for _, c := range req.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateDenied:
			return fmt.Sprintf("was denied (reason %q, message %q)", c.Reason, c.Message)
		case certificatesv1.CertificateFailed:
			return fmt.Sprintf("failed (reason %q, message %q)", c.Reason, c.Message)
		case certificatesv1.CertificateApproved:
			approved = true
		}
	}
	switch {
	case approved && len(req.Status.Certificate) == 0:
		return "is approved but no certificate was issued"
	case approved:
		return "is approved and issued, but the certificate was not taken up"
	default:
		return "is still pending approval"
	}
}

// failure is the one-line error of a request that did not end in a certificate.
func failure(client clientset.Interface, timeout time.Duration, timedOut bool, err error) error {
	name := rec.request()
	detail := ""
	if err != nil {
		detail = err.Error()
	} else if e := rec.lastError(); e != "" {
		detail = e
	}
	if name == "" {
		if detail == "" {
			detail = "no certificate signing request was created"
		}
		return errors.New(detail)
	}
	state := describe(client, name)
	if timedOut {
		return fmt.Errorf("no certificate within %s: CSR %s %s", timeout, name, state)
	}
	if detail != "" && !strings.Contains(state, "denied") && !strings.Contains(state, "failed") {
		return fmt.Errorf("CSR %s %s: %s", name, state, detail)
	}
	return fmt.Errorf("CSR %s %s", name, state)
}

// report prints the certificate the store now holds.
func report(store certificate.FileStore, extra ...string) error {
	cert, err := store.Current()
	if err != nil {
		return fmt.Errorf("the new certificate cannot be read back: %v", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("the new certificate does not parse: %v", err)
		}
	}
	ips := make([]string, 0, len(leaf.IPAddresses))
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	fmt.Printf("subject: %s\n", leaf.Subject.String())
	fmt.Printf("issuer: %s\n", leaf.Issuer.String())
	fmt.Printf("serial: %s\n", leaf.SerialNumber.Text(16))
	fmt.Printf("notBefore: %s\n", leaf.NotBefore.UTC().Format(time.RFC3339))
	fmt.Printf("notAfter: %s\n", leaf.NotAfter.UTC().Format(time.RFC3339))
	fmt.Printf("dns: %s\n", strings.Join(leaf.DNSNames, ","))
	fmt.Printf("ip: %s\n", strings.Join(ips, ","))
	fmt.Printf("certificate: %s\n", store.CurrentPath())
	for i := 0; i+1 < len(extra); i += 2 {
		fmt.Printf("%s: %s\n", extra[i], extra[i+1])
	}
	return nil
}

// runBootstrap is the kubelet's TLS bootstrap: bootstrap.LoadClientCert, unchanged.
func runBootstrap(args []string) error {
	c := newCommon("bootstrap").withCertDir()
	var bootstrapPath string
	c.fs.StringVar(&bootstrapPath, "bootstrap-kubeconfig", "", "kubeconfig with a bootstrap token")
	if err := c.parse(args, "bootstrap-kubeconfig", "kubeconfig", "cert-dir", "node-name"); err != nil {
		return err
	}
	bootstrapConfig, err := loadConfig(bootstrapPath)
	if err != nil {
		return err
	}
	bootstrapClient, err := clientset.NewForConfig(bootstrapConfig)
	if err != nil {
		return fmt.Errorf("bootstrap client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ctx = klog.NewContext(ctx, klog.Background())
	if err := bootstrap.LoadClientCert(ctx, c.kubeconfig, bootstrapPath, c.certDir, types.NodeName(c.nodeName)); err != nil {
		return failure(bootstrapClient, c.timeout, ctx.Err() != nil || wait.Interrupted(err), err)
	}
	store, err := certificate.NewFileStore("kubelet-client", c.certDir, c.certDir, "", "")
	if err != nil {
		return fmt.Errorf("certificate store %s: %v", c.certDir, err)
	}
	if rec.request() == "" {
		fmt.Printf("skipped: %s already holds a valid certificate, nothing requested\n", c.kubeconfig)
	}
	return report(store, "kubeconfig", c.kubeconfig)
}

// rotator is the rotation step of client-go's certificate manager (its Start loop calls the
// same step once the rotation deadline passes; RotateCerts runs it now).
type rotator interface {
	RotateCerts() (bool, error)
}

// rotate runs one rotation of `m` within `timeout`; `client` reads the request back on
// failure.
func rotate(m certificate.Manager, client clientset.Interface, timeout time.Duration) error {
	r, ok := m.(rotator)
	if !ok {
		return errors.New("this client-go certificate manager cannot be asked to rotate now")
	}
	type result struct {
		changed bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		changed, err := r.RotateCerts()
		done <- result{changed, err}
	}()
	select {
	case res := <-done:
		if res.err != nil || !res.changed {
			return failure(client, timeout, false, res.err)
		}
		return nil
	case <-time.After(timeout):
		m.Stop()
		<-done
		return failure(client, timeout, true, nil)
	}
}

// runRotateClient rotates the node's client certificate the way the kubelet does: the
// kubelet's client certificate manager (kubeletcertificate.NewKubeletClientCertificateManager,
// built as cmd/kubelet's buildClientCertificateManager builds it) on the node's current
// credentials, its transport kept on the manager's certificate by UpdateTransport, and one
// rotation step of that manager (see rotator).
func runRotateClient(args []string) error {
	c := newCommon("rotate-client").withCertDir()
	if err := c.parse(args, "kubeconfig", "cert-dir", "node-name"); err != nil {
		return err
	}
	logger := klog.Background()
	certConfig, clientConfig, err := bootstrap.LoadClientConfig(logger, c.kubeconfig, "", c.certDir)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %v", c.kubeconfig, err)
	}
	newClientsetFn := func(current *tls.Certificate) (clientset.Interface, error) {
		config := certConfig
		if current != nil {
			config = clientConfig
		}
		return clientset.NewForConfig(config)
	}
	m, err := kubeletcertificate.NewKubeletClientCertificateManager(c.certDir, types.NodeName(c.nodeName),
		clientConfig.CertData, clientConfig.KeyData, clientConfig.CertFile, clientConfig.KeyFile, newClientsetFn)
	if err != nil {
		return err
	}
	if m.Current() == nil {
		return fmt.Errorf("no valid client certificate in %s or %s to authenticate with", c.certDir, c.kubeconfig)
	}
	before := m.Current().Leaf
	transportConfig := restclient.AnonymousClientConfig(clientConfig)
	stop := make(chan struct{})
	defer close(stop)
	if _, err := kubeletcertificate.UpdateTransport(logger, stop, transportConfig, m, 0); err != nil {
		return fmt.Errorf("node transport: %v", err)
	}
	client, err := clientset.NewForConfig(transportConfig)
	if err != nil {
		return fmt.Errorf("node client: %v", err)
	}
	if err := rotate(m, client, c.timeout); err != nil {
		return err
	}
	store, err := certificate.NewFileStore("kubelet-client", c.certDir, c.certDir, "", "")
	if err != nil {
		return fmt.Errorf("certificate store %s: %v", c.certDir, err)
	}
	return report(store, "previousSerial", before.SerialNumber.Text(16))
}

// runServing requests the kubelet's serving certificate through the kubelet's serving
// certificate manager (kubeletcertificate.NewKubeletServerCertificateManager): its template
// (CN=system:node:<name>, O=system:nodes, the node's DNS names and IPs), its usages and
// signer kubernetes.io/kubelet-serving, authenticated as the node.
func runServing(args []string) error {
	c := newCommon("serving").withCertDir()
	var ips, dns list
	var hostname string
	c.fs.Var(&ips, "ip", "an IP address of the node (repeatable)")
	c.fs.Var(&dns, "dns", "a DNS name of the node (repeatable)")
	c.fs.StringVar(&hostname, "hostname", "", "the node's hostname")
	if err := c.parse(args, "kubeconfig", "cert-dir", "node-name"); err != nil {
		return err
	}
	if len(ips) == 0 {
		return usageError{"at least one --ip is needed (the kubelet asks for a serving certificate only once its node has an IP address)"}
	}
	var addresses []v1.NodeAddress
	for _, ip := range ips {
		if net.ParseIP(ip) == nil {
			return usageError{fmt.Sprintf("--ip %q is not an IP address", ip)}
		}
		addresses = append(addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	for _, d := range dns {
		addresses = append(addresses, v1.NodeAddress{Type: v1.NodeInternalDNS, Address: d})
	}
	if hostname != "" {
		addresses = append(addresses, v1.NodeAddress{Type: v1.NodeHostName, Address: hostname})
	}
	config, err := loadConfig(c.kubeconfig)
	if err != nil {
		return err
	}
	client, err := clientset.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("node client: %v", err)
	}
	m, err := kubeletcertificate.NewKubeletServerCertificateManager(client, &kubeletconfig.KubeletConfiguration{},
		types.NodeName(c.nodeName), func() []v1.NodeAddress { return addresses }, c.certDir)
	if err != nil {
		return err
	}
	if err := rotate(m, client, c.timeout); err != nil {
		return err
	}
	store, err := certificate.NewFileStore("kubelet-server", c.certDir, c.certDir, "", "")
	if err != nil {
		return fmt.Errorf("certificate store %s: %v", c.certDir, err)
	}
	return report(store)
}

// runRegisterNode creates the node's Node object (or updates its labels and addresses), as
// the node: NodeRestriction lets a node write only its own object.
func runRegisterNode(args []string) error {
	c := newCommon("register-node")
	var hostname string
	var internalIP, externalIP, internalDNS, externalDNS list
	c.fs.StringVar(&hostname, "hostname", "", "the node's hostname (default: --node-name)")
	c.fs.Var(&internalIP, "internal-ip", "an InternalIP address (repeatable)")
	c.fs.Var(&externalIP, "external-ip", "an ExternalIP address (repeatable)")
	c.fs.Var(&internalDNS, "internal-dns", "an InternalDNS name (repeatable)")
	c.fs.Var(&externalDNS, "external-dns", "an ExternalDNS name (repeatable)")
	if err := c.parse(args, "kubeconfig", "node-name"); err != nil {
		return err
	}
	if hostname == "" {
		hostname = c.nodeName
	}
	var addresses []v1.NodeAddress
	for _, group := range []struct {
		kind   v1.NodeAddressType
		values list
		ip     bool
	}{
		{v1.NodeInternalIP, internalIP, true},
		{v1.NodeExternalIP, externalIP, true},
		{v1.NodeInternalDNS, internalDNS, false},
		{v1.NodeExternalDNS, externalDNS, false},
	} {
		for _, a := range group.values {
			if group.ip && net.ParseIP(a) == nil {
				return usageError{fmt.Sprintf("%s %q is not an IP address", group.kind, a)}
			}
			addresses = append(addresses, v1.NodeAddress{Type: group.kind, Address: a})
		}
	}
	addresses = append(addresses, v1.NodeAddress{Type: v1.NodeHostName, Address: hostname})
	labels := map[string]string{
		v1.LabelHostname:   hostname,
		v1.LabelOSStable:   runtime.GOOS,
		v1.LabelArchStable: runtime.GOARCH,
	}
	config, err := loadConfig(c.kubeconfig)
	if err != nil {
		return err
	}
	client, err := clientset.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("node client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	nodes := client.CoreV1().Nodes()
	node, err := nodes.Create(ctx, &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: c.nodeName, Labels: labels},
		Status:     v1.NodeStatus{Addresses: addresses},
	}, metav1.CreateOptions{})
	action := "created"
	if apierrors.IsAlreadyExists(err) {
		action = "updated"
		// Other writers (the node lifecycle controller) update the object too: retry on
		// conflict, as the kubelet's own node status updates do.
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			current, err := nodes.Get(ctx, c.nodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if current.Labels == nil {
				current.Labels = map[string]string{}
			}
			for k, v := range labels {
				current.Labels[k] = v
			}
			node, err = nodes.Update(ctx, current, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("update Node %s: %v", c.nodeName, err)
		}
	} else if err != nil {
		return fmt.Errorf("create Node %s: %v", c.nodeName, err)
	}
	if !sameAddresses(node.Status.Addresses, addresses) {
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			current, err := nodes.Get(ctx, c.nodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			current.Status.Addresses = addresses
			node, err = nodes.UpdateStatus(ctx, current, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("set the addresses of Node %s: %v", c.nodeName, err)
		}
	}
	shown := make([]string, 0, len(node.Status.Addresses))
	for _, a := range node.Status.Addresses {
		shown = append(shown, fmt.Sprintf("%s=%s", a.Type, a.Address))
	}
	fmt.Printf("node: %s %s\n", node.Name, action)
	fmt.Printf("addresses: %s\n", strings.Join(shown, ","))
	return nil
}

func sameAddresses(a, b []v1.NodeAddress) bool {
	key := func(l []v1.NodeAddress) string {
		s := make([]string, 0, len(l))
		for _, x := range l {
			s = append(s, string(x.Type)+"="+x.Address)
		}
		sort.Strings(s)
		return strings.Join(s, ",")
	}
	return key(a) == key(b)
}
