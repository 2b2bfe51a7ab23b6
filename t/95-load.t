#!/usr/bin/perl
# Under load, with wrk: the worker's memory does not grow with the number
# of requests (measured over 10,000 of them), and `nginx -s reload`,
# again and again while requests keep coming, fails none of them and
# keeps the counters of the zone.
#
# The provider is a location of the same nginx that answers a fixed chat
# completion, so that the load is nginx's and the module's, not a mock's.

use strict;
use warnings;

use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(json_encode);

my $wrk = '/usr/bin/wrk';
plan skip_all => 'wrk is not installed (apt-get install wrk)' unless -x $wrk;

my $t = LLMRouterTest->new;

my $answer = json_encode({
    id => 'chatcmpl-1', object => 'chat.completion', model => 'gpt-4o-mini',
    choices => [ { index => 0, finish_reason => 'stop',
                   message => { role => 'assistant', content => 'Hello there.' } } ],
    usage => { prompt_tokens => 20, completion_tokens => 3, total_tokens => 23 },
});

my $conf = <<'EOF' =~ s/%%ANSWER%%/$answer/r;
llm_router_model mini  { url http://127.0.0.1:%%PORT%%/provider; model gpt-4o-mini; key sk-mini; price 0.15 0.60; }
llm_router_model large { url http://127.0.0.1:%%PORT%%/provider; model gpt-4o; key sk-large; price 2.50 10.00; }
llm_router_keywords hard "prove" "step by step";
llm_router_zone llm 1m;

upstream self {
    server 127.0.0.1:%%PORT%%;
    keepalive 8;
}

server {
    listen 127.0.0.1:%%PORT%%;
    keepalive_requests 100000;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_rule code code large;
        llm_router_rule hard keywords=hard large;
        llm_router_rule long tokens>2000 large;
        llm_router_default mini;
        access_log %%PREFIX%%/llm.log combined;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass $llm_router_url;
    }

    location = /provider {
        default_type application/json;
        return 200 '%%ANSWER%%';
    }

    location = /metrics {
        llm_router_status;
    }
}
EOF

$t->config($conf)->run;

my $body = json_encode({ model => 'auto', messages => [
    { role => 'system', content => 'Be brief.' },
    { role => 'user', content => 'Say hello to the people of the town ' x 20 } ] });
$t->write_file('body.json', $body);

# a wrk script that POSTs the body
sub script {
    my ($name, @headers) = @_;
    my $h = join '', map { "wrk.headers[\"$_->[0]\"] = \"$_->[1]\"\n" }
                     [ 'Content-Type', 'application/json' ], @headers;
    return $t->write_file($name, <<"EOF");
wrk.method = "POST"
local f = io.open("@{[ $t->prefix ]}/body.json", "rb")
wrk.body = f:read("*a")
f:close()
$h
EOF
}

sub run_wrk {
    my ($script, %o) = @_;
    my $url = 'http://127.0.0.1:' . $t->port . '/v1/chat/completions';
    my $out = `$wrk -t1 -c$o{c} -d$o{d}s -s $script $url 2>&1`;
    my ($n) = $out =~ /(\d+) requests in/;
    my ($non2xx) = $out =~ /Non-2xx or 3xx responses: (\d+)/;
    my ($errors) = $out =~ /Socket errors: (.*)/;
    return { out => $out, requests => $n // 0, non2xx => $non2xx // 0,
             errors => $errors };
}

# $n requests, one after the other on one keepalive connection; the
# number of 200s
sub requests {
    my ($n) = @_;
    my $c = $t->connect;
    my $ok = 0;
    for (1 .. $n) {
        my $r = $t->http(conn => $c, method => 'POST', path => '/v1/chat/completions',
                         headers => { 'Content-Type' => 'application/json' }, body => $body);
        $ok++ if $r->{status} == 200;
    }
    close $c;
    return $ok;
}

sub worker_pid {
    my ($pid) = $t->error_log =~ /.*start worker process (\d+)/s;
    return $pid;
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+) kB/ }
    return undef;
}

sub routed_total {
    my $r = $t->http(path => '/metrics');
    my $sum = 0;
    $sum += $1 while $r->{body} =~ /^llm_router_requests_total\{[^}]*\} (\d+)$/mg;
    return $sum;
}

# ---------------------------------------------------------------- memory

SKIP: {
    # a sanitizer's or valgrind's own memory would be measured
    skip "the worker's memory is not measured under $ENV{LLMR_SANITIZER}", 5
        if $ENV{LLMR_SANITIZER};

    is requests(2000), 2000, 'warm-up: 2,000 requests';

    my $pid = worker_pid();
    my @rss = (rss_kb($pid));

    for my $round (1 .. 2) {
        is requests(10000), 10000, "10,000 requests more, round $round: all answered";
        push @rss, rss_kb($pid);
    }

    diag sprintf 'worker RSS: %d kB after the warm-up, %d kB after 10,000 more, %d kB after 20,000',
         @rss;
    cmp_ok $rss[2] - $rss[1], '<=', 256,
        'the second 10,000 requests grow the worker by 256 kB at most (26 bytes a request)';
    is routed_total(), 22000, 'the zone counted each request once';
}

# ---------------------------------------------------------------- reload

my $before = routed_total();
my $load = script('close.lua', [ 'Connection', 'close' ]);

my $child = open(my $wrk_out, '-|') // die "fork: $!";
if ($child == 0) {
    my $r = run_wrk($load, c => 4, d => 6);
    print json_encode($r);
    close STDOUT;

    # not exit(): the END blocks of the harness would stop nginx
    POSIX::_exit(0);
}

sleep 0.5;
my $reloads = 0;
for (1 .. 5) {
    $reloads++ if $t->reload;
    sleep 0.5;
}
my $r = LLMRouterTest::json_decode(do { local $/; <$wrk_out> });
close $wrk_out;

is $reloads, 5, 'five reloads under load';
cmp_ok $r->{requests}, '>', $ENV{LLMR_SANITIZER} ? 20 : 500,
    "wrk made $r->{requests} requests meanwhile";
is_deeply [ $r->{non2xx}, $r->{errors} ], [ 0, undef ], 'none failed'
    or diag $r->{out};

my $after = routed_total();
cmp_ok $after, '>=', $before + $r->{requests}, 'the counters kept counting across the reloads';
cmp_ok $after, '<=', $before + $r->{requests} + 4,
    'each request once (and those cut at the end of the run)';

my @temp = map { glob($t->prefix . "/${_}_temp/*") } qw(client_body proxy);
is scalar(@temp), 0, 'no temporary file is left';

$t->stop;

done_testing;
