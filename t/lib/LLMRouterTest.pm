package LLMRouterTest;

# Test harness for ngx_http_llm_router_module, in the spirit of nginx-tests:
# every test file gets its own temp prefix, its own mock providers
# (tools/mock-provider) and its own nginx (master + 1 worker, foreground).
#
#   use LLMRouterTest qw(user convo);
#   my $t = LLMRouterTest->new;
#   $t->mock('mini', key => 'sk-mini');              # auth bearer
#   $t->config(<<'EOF')->run;                        # inside http { }
#   llm_router_model mini { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }
#   server {
#       listen 127.0.0.1:%%PORT%%;
#       location = /v1/chat/completions {
#           llm_router on; llm_router_default mini; proxy_pass $llm_router_url;
#       }
#   }
#   EOF
#   my $r = $t->ask('hello');                        # POST, model "auto"
#   is $r->{status}, 200;
#   $t->stop;                                        # adds one test
#
# Placeholders in config templates: %%PORT%% (nginx), %%PREFIX%%,
# %%PORT_name%%, %%URL_name%% (http://127.0.0.1:port/v1/chat/completions)
# and %%CAPTURE_name%% for a mock started with $t->mock('name');
# %%ROUTE_HEADERS%% adds X-LLM-Model/-Rule/-Upstream response headers
# (read back with route_of($response)).
#
# Environment: NGINX_BIN (default /usr/sbin/nginx), LLMR_MODULE (default
# <repo>/build/ngx_http_llm_router_module.so), LLMR_KEEP=1 keeps the temp
# prefix, LLMR_DEBUG=1 sets the error_log level to debug.

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(user convo words route_of bytes_is json_encode json_decode usd
                    only content_of usage_of slurp jsonl);

our $REPO = abs_path(dirname(abs_path(__FILE__)) . '/../..');

# what the tests run: LLMR_BUILD=build/asan for the sanitized build
our $BUILD = abs_path($ENV{LLMR_BUILD} // "$REPO/build");
my $JSON = JSON::PP->new->utf8->canonical;
my @TEMP_PATHS = qw(client_body proxy fastcgi uwsgi scgi);
my @LIVE;

# nginx is not tied to us: make sure END (which stops it) runs when the
# test is interrupted or its output pipe closes
$SIG{PIPE} = 'IGNORE';
$SIG{$_} = sub { die "killed by SIG$_[0]\n" } for qw(INT TERM HUP);

END {
    local $?;

    # a copy: stop() takes each one off @LIVE
    my @live = grep { defined } @LIVE;
    $_->stop for @live;
}

# ------------------------------------------------------------------ setup

sub new {
    my ($class, %opt) = @_;
    my $nginx = $ENV{NGINX_BIN} // '/usr/sbin/nginx';
    my $module = $ENV{LLMR_MODULE} // "$BUILD/ngx_http_llm_router_module.so";
    BAIL_OUT("nginx binary not found: $nginx") unless -x $nginx;
    $module = undef if $opt{no_module};
    BAIL_OUT("module not built: run make ($module is missing)")
        if defined $module && !-f $module;

    my $prefix = tempdir('llmr-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{LLMR_KEEP});
    diag("prefix: $prefix") if $ENV{LLMR_KEEP};
    chmod 0777, $prefix;

    # an nginx built without --error-log-path=stderr (nginx.org's source,
    # by default) opens logs/error.log of its prefix before it reads
    # nginx.conf, and says [alert] when it cannot
    mkdir "$prefix/logs";
    for (@TEMP_PATHS) {
        mkdir "$prefix/${_}_temp";
        chmod 0777, "$prefix/${_}_temp";
    }

    my $self = bless {
        nginx  => $nginx,
        module => defined $module ? abs_path($module) : undef,
        prefix => $prefix,
        port   => free_port(),
        mocks  => {},
    }, $class;
    push @LIVE, $self;
    return $self;
}

sub prefix { $_[0]{prefix} }
sub port   { $_[0]{port} }

# Start a mock provider called $name; %opt: key, auth.  Returns its port.
sub mock {
    my ($self, $name, %opt) = @_;
    my $port = free_port();
    my $capture = "$self->{prefix}/capture-$name";
    mkdir $capture;
    chmod 0777, $capture;

    my @cmd = ($^X, "$REPO/tools/mock-provider", '--port', $port,
               '--name', $name, '--capture', $capture, '--exit-with-parent');
    push @cmd, '--key', $opt{key} if defined $opt{key};
    push @cmd, '--auth', $opt{auth} if defined $opt{auth};

    my $log = "$self->{prefix}/mock-$name.log";
    my $pid = spawn(\@cmd, $log);
    wait_port($port, $pid)
        or die "mock-provider $name did not start:\n" . slurp($log);
    $self->{mocks}{$name} = { port => $port, pid => $pid, capture => $capture };
    return $port;
}

sub mock_info {
    my ($self, $name) = @_;
    return $self->{mocks}{$name} // die "no mock provider called '$name'\n";
}

# Write a file into the prefix; returns its absolute path.
sub write_file {
    my ($self, $name, $content, $mode) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{prefix}/$name";
    open my $fh, '>:raw', $path or die "$path: $!\n";
    print $fh $content;
    close $fh;
    chmod $mode // 0644, $path;
    return $path;
}

# Expand placeholders and write nginx.conf; $template is the inside of http {}.
sub config {
    my ($self, $template) = @_;
    my $p = $self->{prefix};
    my $body = $template =~ s/%%(\w+)%%/$self->placeholder($1)/ger;
    my $level = $ENV{LLMR_DEBUG} ? 'debug' : 'info';
    my $temp = join '', map { "    ${_}_temp_path $p/${_}_temp;\n" } @TEMP_PATHS;
    my $load = $self->{module} ? "load_module $self->{module};\n" : '';

    # nginx gives its workers only the environment it is told to
    $load .= join '', map { "env $_;\n" } grep { exists $ENV{$_} }
                      qw(ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS);

    $self->write_file('nginx.conf', <<"EOF");
${load}daemon off;
master_process on;
worker_processes 1;
error_log $p/error.log $level;
pid $p/nginx.pid;

events {
    worker_connections 256;
}

http {
    access_log off;
$temp
$body
}
EOF
    return $self;
}

my $ROUTE_HEADERS = join "\n", map { "add_header X-LLM-$_->[0] \$llm_router_$_->[1] always;" }
    [Model => 'model'], [Rule => 'rule'], [Upstream => 'upstream_model'];

sub placeholder {
    my ($self, $key) = @_;
    return $ROUTE_HEADERS  if $key eq 'ROUTE_HEADERS';
    return $self->{port}   if $key eq 'PORT';
    return $self->{prefix} if $key eq 'PREFIX';
    my ($what, $name) = $key =~ /^(PORT|URL|CAPTURE)_(\w+)$/
        or die "unknown placeholder %%$key%%\n";
    my $m = $self->mock_info($name);
    return $what eq 'PORT' ? $m->{port}
         : $what eq 'URL'  ? "http://127.0.0.1:$m->{port}/v1/chat/completions"
         :                   $m->{capture};
}

# ------------------------------------------------------------------ nginx

sub nginx_cmd {
    my ($self, @args) = @_;
    return ($self->{nginx}, '-p', "$self->{prefix}/", '-c', "$self->{prefix}/nginx.conf", @args);
}

# nginx -t of $http (models, zones...) and a router location with the
# extra directives $location and a default model "a": "passed", or the
# [emerg] message with its place shortened to "in nginx.conf:N".
sub config_error {
    my ($self, $http, $location) = @_;
    my ($ok, $out) = $self->config(<<"EOF")->nginx_test;
$http
server {
    listen 127.0.0.1:%%PORT%%;
    location / {
        llm_router on;
        llm_router_default a;
        $location
        proxy_pass \$llm_router_url;
    }
}
EOF
    return 'passed' if $ok;
    my ($emerg) = $out =~ /\[emerg\] (?:\d+#\d+: )?(.*)$/m or return $out;
    return $emerg =~ s/ in \S*nginx\.conf:\d+$/ in nginx.conf:N/r;
}

# nginx -t: returns (exit_ok, output).
sub nginx_test {
    my ($self) = @_;
    my $out = "$self->{prefix}/nginx-t.out";
    my $pid = spawn([$self->nginx_cmd('-t')], $out, 'truncate');
    waitpid $pid, 0;
    return ($? == 0, slurp($out));
}

sub run {
    my ($self) = @_;
    die "nginx already running\n" if $self->{nginx_pid};
    my $err = "$self->{prefix}/error.log";
    $self->{log_offset} = -s $err // 0;
    my $stderr = "$self->{prefix}/stderr.log";
    my $pid = spawn([$self->nginx_cmd], $stderr);
    $self->{nginx_pid} = $pid;
    $self->{ran} = 1;
    unless (wait_port($self->{port}, $pid)) {
        delete $self->{nginx_pid};
        die "nginx did not start:\n" . slurp($stderr) . $self->error_log;
    }
    return $self;
}

# Re-read the configuration (optionally a new template) and wait until the
# old worker has gone.  Returns true on success.
sub reload {
    my ($self, $template) = @_;
    $self->config($template) if defined $template;
    my ($old) = $self->error_log =~ /.*start worker process (\d+)/s;
    kill 'HUP', $self->{nginx_pid} or return 0;
    my $deadline = time + 10;
    while (time < $deadline) {
        my $log = $self->error_log;
        return 1 if $log =~ /worker process $old exited/;
        sleep 0.05;
    }
    return 0;
}

# Stop nginx and the mocks; if nginx ran, one test checks the error log.
sub stop {
    my ($self) = @_;
    return if $self->{stopped}++;
    @LIVE = grep { defined && $_ != $self } @LIVE;

    if (my $pid = delete $self->{nginx_pid}) {
        kill 'TERM', $pid;
        unless (wait_pid($pid, 10)) {
            kill 'KILL', $pid;
            wait_pid($pid, 5);
            $self->{killed} = 1;
        }
    }
    for my $m (values %{ $self->{mocks} }) {
        kill 'TERM', $m->{pid};
        wait_pid($m->{pid}, 5) or kill 'KILL', $m->{pid};
    }
    return unless $self->{ran};

    my $log = substr($self->error_log, $self->{log_offset})
            . slurp("$self->{prefix}/stderr.log");
    my @bad = grep { /\[(?:alert|emerg|crit)\]|exited on signal|segfault|Sanitizer|runtime error:/ }
              split /\n/, $log;
    push @bad, 'nginx did not exit on SIGTERM' if $self->{killed};
    ok(!@bad, 'no alert/crit/emerg/crash in error.log')
        or diag(join "\n", @bad);
}

# The samples of a metric on the status page (/metrics): { labels => value }.
sub family {
    my ($self, $name, $path) = @_;
    my %f;
    for (split /\n/, $self->http(path => $path // '/metrics')->{body}) {
        $f{$1 // ''} = $2 if /^\Q$name\E(?:\{(.*)\})? (\S+)$/;
    }
    return \%f;
}

sub error_log { slurp("$_[0]{prefix}/error.log") }

# Content of a file in the prefix ('' when missing).
sub read_file {
    my ($self, $name) = @_;
    return slurp($name =~ m{^/} ? $name : "$self->{prefix}/$name");
}

# ------------------------------------------------------------------ files

# Decoded JSON records of an access log ($file relative to the prefix);
# waits up to 5 s for at least $min records (nginx may log just after the
# client saw the response).  A line that is not JSON is { _invalid => LINE }.
sub access_log_records {
    my ($self, $file, $min) = @_;
    $file = "$self->{prefix}/$file" unless $file =~ m{^/};
    my $deadline = time + 5;
    while (1) {
        # whole lines only: nginx may be writing the last one
        (my $text = slurp($file)) =~ s/[^\n]*\z//;
        my @lines = grep { length } split /\n/, $text;
        if (@lines >= ($min // 0) || time > $deadline) {
            return map { my $l = $_; eval { $JSON->decode($l) } // { _invalid => $l } } @lines;
        }
        sleep 0.02;
    }
}

# The next record of $file not yet returned by next_record() (undef if
# none arrives in time).
sub next_record {
    my ($self, $file) = @_;
    my $n = $self->{log_cursor}{$file}++ // 0;
    return ($self->access_log_records($file, $n + 1))[$n];
}

# Last request seen by a mock: { head, body, headers => { lc name => [values] } }.
sub capture {
    my ($self, $name) = @_;
    my $dir = $self->mock_info($name)->{capture};
    my $head = slurp("$dir/last.head");
    my %h;
    for (split /\r\n/, $head) {
        push @{ $h{lc $1} }, $2 if /^([^:\s]+):[ \t]*(.*?)[ \t]*$/;
    }
    return { head => $head, body => slurp("$dir/last.body"), headers => \%h };
}

# The JSON body of the last request a mock received, decoded.
sub upstream_json {
    my ($self, $name) = @_;
    return eval { $JSON->decode($self->capture($name)->{body}) };
}

# Lines of a mock's requests.log (one per request it received).
sub requests {
    my ($self, $name) = @_;
    return grep { length } split /\n/, slurp($self->mock_info($name)->{capture} . '/requests.log');
}

# ------------------------------------------------------------------ client

# One HTTP request on a fresh connection.  Options:
#   method, path, headers ({} or [name => value, ...] to repeat or order
#   them), body (bytes),
#   chunked => 1 | [sizes]  send the body chunked (in pieces of these sizes),
#   split => [sizes]        send a Content-Length body in several writes,
#   pause_ms => N           sleep between writes, http10 => 1, timeout => s,
#   conn => $t->connect     use (and keep) this connection, reading one
#                           response by its framing.
# Returns { status, headers (lc keys), head, body, json, events, chunks,
# reads (arrival times of the pieces, in seconds from the first) }.
sub http {
    my ($self, %o) = @_;
    my $method = $o{method} // 'GET';
    my $path = $o{path} // '/';
    my $body = $o{body};
    my @hdrs = header_list($o{headers});
    my %given = map { lc } @hdrs;

    my $head = "$method $path HTTP/" . ($o{http10} ? '1.0' : '1.1') . "\r\n"
             . "Host: localhost\r\n";
    $head .= "Connection: close\r\n" unless $o{http10} || $o{conn};

    my @writes;
    if (defined $body) {
        if ($o{chunked}) {
            $head .= "Transfer-Encoding: chunked\r\n";
            @writes = map { sprintf("%x\r\n%s\r\n", length, $_) }
                      pieces($body, ref $o{chunked} ? @{ $o{chunked} } : ());
            push @writes, "0\r\n\r\n";
        } else {
            $head .= 'Content-Length: ' . length($body) . "\r\n"
                unless exists $given{'content-length'};
            @writes = pieces($body, @{ $o{split} || [] });
        }
    }
    while (my ($k, $v) = splice @hdrs, 0, 2) {
        $head .= "$k: $v\r\n";
    }
    unshift @writes, "$head\r\n";
    @writes = (join '', @writes) unless $o{pause_ms};

    my $sock = $o{conn} // $self->connect($o{port});
    {
        local $SIG{PIPE} = 'IGNORE';
        for my $i (0 .. $#writes) {
            sleep $o{pause_ms} / 1000 if $i > 0 && $o{pause_ms};
            last unless write_all($sock, $writes[$i]);
        }
    }
    return parse_response(read_response($sock, $o{timeout} // 10)) if $o{conn};
    my ($raw, $reads) = read_all($sock, $o{timeout} // 10);
    close $sock;
    return { %{ parse_response($raw) }, reads => $reads };
}

# A connection to nginx for several requests: $t->http(conn => $c, ...).
sub connect {
    my ($self, $port) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port // $self->{port},
                                     Proto => 'tcp', Timeout => 5)
        or die "connect to nginx: $!\n";
    binmode $sock;
    return $sock;
}

# POST a JSON chat request: body => perl structure (or raw bytes).
sub chat {
    my ($self, %o) = @_;
    my $body = ref $o{body} ? $JSON->encode($o{body}) : $o{body};
    my @headers = header_list($o{headers});
    unshift @headers, 'Content-Type' => 'application/json'
        unless grep { lc eq 'content-type' } @headers;
    return $self->http(method => 'POST', path => '/v1/chat/completions',
                       %o, body => $body, headers => \@headers);
}

# The common case: one user message, model "auto" (override with model =>,
# undef to leave it out); extra body fields with fields => {...}.
sub ask {
    my ($self, $text, %o) = @_;
    my %body = (messages => [user($text)], %{ delete $o{fields} || {} });
    my $model = exists $o{model} ? delete $o{model} : 'auto';
    $body{model} = $model if defined $model;
    return $self->chat(%o, body => \%body);
}

sub user { { role => 'user', content => $_[0] } }

# $n short words: about $n tokens for the module's estimate.
sub words { join ' ', ('word') x $_[0] }

# Headers that let only the mocks named (comma-separated) answer as
# asked by %h: the others answer normally.
sub only { my ($mocks, %h) = @_; return { 'X-Mock-Only' => $mocks, %h } }

# The content of a JSON answer's first choice.
sub content_of { my ($r) = @_; return ref $r->{json} eq 'HASH' ? $r->{json}{choices}[0]{message}{content} : undef }

# The usage of an answer: the JSON's, or a stream's usage chunk.
sub usage_of {
    my ($r) = @_;
    return $r->{json}{usage} if ref $r->{json} eq 'HASH' && $r->{json}{usage};
    my ($u) = map { $_->{usage} } grep { ref $_ eq 'HASH' && ref $_->{usage} eq 'HASH' } @{ $r->{events} };
    return $u;
}

# USD of pico-USD, as the module prints it: up to 12 decimals, without
# trailing zeros.
sub usd {
    my ($pico) = @_;
    my $s = sprintf '%d.%012d', int($pico / 1_000_000_000_000), $pico % 1_000_000_000_000;
    $s =~ s/0+\z//;
    $s =~ s/\.\z//;
    return $s;
}

# "MODEL/RULE" from the %%ROUTE_HEADERS%% of a 200 answer, else "HTTP nnn".
sub route_of {
    my ($r) = @_;
    return "HTTP $r->{status}" unless $r->{status} == 200;
    return join '/', map { $r->{headers}{"x-llm-$_"} // '-' } qw(model rule);
}

# Send a chat request (%o as for chat) and describe where it went:
# "MODEL/RULE@MOCK:UPSTREAM_MODEL" (the mock that answered and the model
# it saw in the body), or "HTTP nnn" when the answer was not 200.
sub route {
    my ($self, %o) = @_;
    my $r = $self->chat(%o);
    my $route = route_of($r);
    return $route unless $r->{status} == 200;
    my $mock = $r->{headers}{'x-mock-provider'} // '?';
    my $seen = $self->{mocks}{$mock} ? $self->upstream_json($mock) : undef;
    return sprintf '%s@%s:%s', $route, $mock, $seen ? $seen->{model} // '-' : '?';
}

# convo('u1', 'a1', 'u2', ...): alternating user/assistant messages.
sub convo {
    my @m;
    push @m, { role => @m % 2 ? 'assistant' : 'user', content => $_ } for @_;
    return @m;
}

# is() for long byte strings: on failure shows the first difference only.
sub bytes_is {
    my ($got, $want, $name) = @_;
    my $tb = Test::More->builder;
    return $tb->ok(1, $name) if defined $got && $got eq $want;
    $tb->ok(0, $name);
    $got //= '';
    my $i = 0;
    $i++ while $i < length $got && $i < length $want
               && substr($got, $i, 1) eq substr($want, $i, 1);
    my $show = sub { my $s = substr $_[0], ($i > 20 ? $i - 20 : 0), 60; $s =~ s/([^ -~])/sprintf '\\x%02x', ord $1/ge; $s };
    $tb->diag(sprintf "lengths: got %d, expected %d; first difference at byte %d\n"
                    . "     got: ...%s...\nexpected: ...%s...",
              length $got, length $want, $i, $show->($got), $show->($want));
    return 0;
}

sub json_encode { $JSON->encode($_[0]) }
sub json_decode { $JSON->decode($_[0]) }

# Headers given as { name => value } or [name => value, ...] as a list.
sub header_list {
    my ($h) = @_;
    return ref $h eq 'ARRAY' ? @$h : map { $_ => $h->{$_} } sort keys %{ $h || {} };
}

sub parse_response {
    my ($raw) = @_;
    my $r = { raw => $raw, status => 0, headers => {}, body => '', events => [] };
    my $end = index $raw, "\r\n\r\n";
    return $r if $end < 0;
    my $head = substr $raw, 0, $end;
    my $rest = substr $raw, $end + 4;
    my ($status_line, @lines) = split /\r\n/, $head;
    ($r->{status}) = $status_line =~ m{^HTTP/\d\.\d (\d{3})};
    $r->{head} = $head;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
        $r->{headers}{lc $k} = exists $r->{headers}{lc $k} ? "$r->{headers}{lc $k}, $v" : $v;
    }
    my $h = $r->{headers};
    if (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        ($r->{body}, $r->{chunks}) = dechunk($rest);
    } elsif (defined $h->{'content-length'}) {
        $r->{body} = substr $rest, 0, $h->{'content-length'};
    } else {
        $r->{body} = $rest;
    }
    if (($h->{'content-type'} // '') =~ m{^text/event-stream}) {
        $r->{events} = [ map { $_ eq '[DONE]' ? $_ : eval { $JSON->decode($_) } // { _invalid => $_ } }
                         $r->{body} =~ /^data: ?(.*?)\r?$/mg ];
    }
    $r->{json} = eval { $JSON->decode($r->{body}) }
        if ($h->{'content-type'} // '') =~ m{json};
    return $r;
}

sub dechunk {
    my ($data) = @_;
    my ($body, $n) = ('', 0);
    while ($data =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
        my $size = hex $1;
        last if $size == 0;
        $body .= substr $data, 0, $size, '';
        $data =~ s/^\r\n//;
        $n++;
    }
    return ($body, $n);
}

# ------------------------------------------------------------------ utils

# Cut $bytes into pieces of the given sizes; the rest is the last piece.
sub pieces {
    my ($bytes, @sizes) = @_;
    my @out;
    for my $size (@sizes) {
        last unless length $bytes;
        push @out, substr $bytes, 0, $size, '';
    }
    push @out, $bytes if length $bytes || !@out;
    return @out;
}

sub write_all {
    my ($sock, $data) = @_;
    while (length $data) {
        my $n = syswrite $sock, $data;
        return 0 unless defined $n;
        substr $data, 0, $n, '';
    }
    return 1;
}

# Everything up to EOF; also returns when each read arrived (seconds since
# the first one) so that tests can see whether a stream came in pieces.
sub read_all {
    my ($sock, $timeout) = @_;
    my $sel = IO::Select->new($sock);
    my ($raw, @times) = ('');
    while ($sel->can_read($timeout)) {
        my $n = sysread $sock, $raw, 65536, length $raw;
        last unless $n;
        push @times, time;
    }
    return ($raw, [map { $_ - $times[0] } @times]);
}

# Exactly one response from a kept-alive connection, by its framing.
sub read_response {
    my ($sock, $timeout) = @_;
    my $sel = IO::Select->new($sock);
    my $buf = '';
    my $more = sub { $sel->can_read($timeout) && sysread $sock, $buf, 65536, length $buf };
    my $end;
    $more->() or return $buf until ($end = index $buf, "\r\n\r\n") >= 0;
    my $head = substr $buf, 0, $end + 4;
    if ($head =~ /^Transfer-Encoding:[ \t]*chunked/mi) {
        my $pos = $end + 4;
        while (1) {
            my $eol = index $buf, "\r\n", $pos;
            if ($eol < 0) {
                $more->() or return $buf;
                next;
            }
            my ($hex) = substr($buf, $pos, $eol - $pos) =~ /^([0-9a-fA-F]+)/;
            my $size = hex($hex // 0);
            if ($size == 0) {           # last chunk, maybe trailers, empty line
                my $last;
                $more->() or return $buf until ($last = index $buf, "\r\n\r\n", $eol) >= 0;
                return substr $buf, 0, $last + 4;
            }
            $pos = $eol + 2 + $size + 2;
            $more->() or return $buf while length $buf < $pos;
        }
    }
    my ($length) = $head =~ /^Content-Length:[ \t]*(\d+)/mi;
    my $need = defined $length ? $end + 4 + $length : 1e12;    # or close-delimited
    while (length $buf < $need) {
        $more->() or last;
    }
    return $buf;
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1)
        or die "cannot find a free port: $!\n";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub spawn {
    my ($cmd, $log, $truncate) = @_;
    my $pid = fork // die "fork: $!\n";
    return $pid if $pid;
    open STDIN, '<', '/dev/null';
    open STDOUT, $truncate ? '>' : '>>', $log or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT;
    { exec @$cmd }
    POSIX::_exit(127);
}

# Wait until $port accepts connections; false if $pid exits first.
sub wait_port {
    my ($port, $pid, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    while (time < $deadline) {
        return 0 if waitpid($pid, WNOHANG) == $pid;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp');
        if ($s) {
            close $s;
            return 1;
        }
        sleep 0.02;
    }
    return 0;
}

sub wait_pid {
    my ($pid, $timeout) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $r = waitpid $pid, WNOHANG;
        return 1 if $r == $pid || $r == -1;
        sleep 0.02;
    }
    return 0;
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<:raw', $file or return '';
    local $/;
    return scalar <$fh>;
}

# Lines of JSON: structures encoded, strings as they are.
sub jsonl { join '', map { (ref $_ ? json_encode($_) : $_) . "\n" } @_ }

1;
