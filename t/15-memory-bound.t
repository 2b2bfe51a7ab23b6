#!/usr/bin/perl
# The memory a request holds is bounded by llm_router_string_buffer_size,
# whatever its body: a string cut by the ends of the body's buffers is
# kept up to that size, and the rest of it checked and counted, not
# kept.  Stalled clients each sending a long unterminated string do not
# grow the worker; a long string that ends is routed and sent whole.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep);
use LLMRouterTest qw(route_of json_encode);

plan tests => 7;

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->config(<<'EOF')->run;
llm_router_model mini { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }
log_format llm escape=none '$llm_router_log';
server {
    listen 127.0.0.1:%%PORT%%;
    access_log %%PREFIX%%/llm.log llm;
    client_max_body_size 64m;
    client_body_timeout 30s;
    %%ROUTE_HEADERS%%
    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }
}
EOF

sub worker_pid { my ($pid) = $t->error_log =~ /.*start worker process (\d+)/s; return $pid }

sub rss_kb {
    open my $fh, '<', "/proc/$_[0]/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+) kB/ }
    return 0;
}

# a long string that ends: routed, and sent byte for byte
my $text = join ' ', ('caf' . "\xc3\xa9" . ' \\"quoted\\" \u00e9 word') x 20000;
my $body = '{"model":"auto","messages":[{"role":"user","content":"' . $text . '"}],"stream":false}';
my $r = $t->chat(body => $body, split => [(8192) x 100]);
my $rec = $t->next_record('llm.log');
is "$r->{status} " . route_of($r), '200 mini/default', 'a string of ' . length($text) . ' bytes, cut: routed';
is $t->capture('mini')->{body}, $body =~ s/"auto"/"gpt-4o-mini"/r, '  sent whole, the model rewritten';
cmp_ok $rec->{est_tokens}, '>', length($text) / 8, '  its tokens counted, those not kept too';

# 20 clients stall in the middle of a string of 2 MB each
my $pid = worker_pid();
my $before = rss_kb($pid);
my @conns;
for (1 .. 20) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port) or die;
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           . "Content-Length: 3000000\r\n\r\n" . '{"model":"auto","messages":[{"role":"user","content":"';
    for (1 .. 64) {
        print $s 'a' x 32768;
    }
    push @conns, $s;
}
sleep 1;
my $after = rss_kb($pid);
diag "worker RSS: $before kB, $after kB with 20 clients 2 MB into a string";
cmp_ok $after - $before, '<', 16 * 1024, 'the worker holds at most the bound per request, not the strings';
close $_ for @conns;

# a number cut and running on: refused
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port) or die;
my $num = '{"messages":[{"role":"user","content":"x"}],"max_tokens":' . ('9' x 100000) . '}';
print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       . "Connection: close\r\nContent-Length: " . length($num) . "\r\n\r\n";
for my $i (0 .. int(length($num) / 1000)) {
    print $s substr($num, $i * 1000, 1000);
    sleep 0.001;
}
local $/;
my $resp = <$s> // '';
like $resp, qr{^HTTP/1\.1 400 .*a number or literal longer than 4096 bytes}s, 'a number without end is refused';

my $c = LLMRouterTest->new;
is $c->config_error('llm_router_model a { url http://127.0.0.1:1/v1/chat/completions; auth none; }',
                    'llm_router_string_buffer_size 100;'),
   'value must be between 1024 and 1073741824 in nginx.conf:N',
   'nginx -t: a bound too small for a model name';

$t->stop;
