#!/usr/bin/perl
# Failover: a model that fails before anything reached the client (refused
# connection, timeout, a status of llm_router_fallback_status) hands the
# same request, rewritten for it, to the next model of its "fallback"
# chain.  The client sees only the answer that counts; streams fail over
# until their header is sent, and are never duplicated after it.

use strict;
use warnings;

use Test::More;
use IO::Select;
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(user words route_of bytes_is json_encode only content_of);

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('large', key => 'sk-large');
$t->mock('backup', key => 'sk-backup');
$t->mock('tiny');
my $dead = 'http://127.0.0.1:' . LLMRouterTest::free_port() . '/v1/chat/completions';

$t->config(<<"EOF" . <<'EOF')->run;
llm_router_model dead     { url $dead; model dead-1; auth none; fallback large; }
llm_router_model gone     { url $dead; model gone-1; auth none; }
EOF
llm_router_model mini     { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; fallback large; }
llm_router_model large    { url %%URL_large%%; model gpt-4o; key sk-large; fallback backup; }
llm_router_model backup   { url %%URL_backup%%; model backup-1; key sk-backup; }
llm_router_model lastdead { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; fallback gone; }
llm_router_model rl_json   { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; fallback large; }
llm_router_model rl_stream { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; fallback large; }
llm_router_model ctx      { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; fallback tiny; }
llm_router_model tiny     { url %%URL_tiny%%; model tiny-1; auth none; context 10; fallback backup; }

log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;

    llm_router_default mini;
    llm_router_pin dead lastdead rl_json rl_stream ctx;    # the tests pin them
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_connect_timeout 1s;
    proxy_read_timeout 300ms;
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        access_log %%PREFIX%%/llm.log llm;
        proxy_pass $llm_router_url;
    }

    location /teapot {
        llm_router_fallback_status 418;

        location = /teapot/inner {
            llm_router on;
            proxy_pass $llm_router_url;
        }
    }
}
EOF

my @MOCKS = qw(mini large backup tiny);

sub sent_counts { return { map { $_ => scalar(() = $t->requests($_)) } @MOCKS } }

# Send a chat request (%o as for $t->ask, plus text => ...) and describe
# the outcome: "STATUS PROVIDER MODEL/RULE, sent: mini=1 large=1" (the
# mock whose X-Mock-Provider came back, the route headers, and how many
# requests each mock received).  Also returns the response, with elapsed.
sub outcome {
    my (%o) = @_;
    my $settle = delete $o{settle};
    my $before = sent_counts();
    my $t0 = time;
    my $r = $t->ask(delete $o{text} // 'hi', %o);
    $r->{elapsed} = time - $t0;
    sleep $settle if $settle;
    my $after = sent_counts();
    my $sent = join ' ', map { "$_=" . ($after->{$_} - $before->{$_}) }
                         grep { $after->{$_} != $before->{$_} } @MOCKS;
    my $route = join '/', map { $r->{headers}{"x-llm-$_"} // '-' } qw(model rule);
    my $desc = sprintf '%d %s %s, sent: %s', $r->{status}, $r->{headers}{'x-mock-provider'} // '-',
                       $route, $sent || 'none';
    return ($desc, $r);
}

sub stream_text {
    my ($r) = @_;
    return join '', map { $_->{choices}[0]{delta}{content} // '' }
                    grep { ref $_ eq 'HASH' && ref $_->{choices} eq 'ARRAY' && @{ $_->{choices} } }
                    @{ $r->{events} };
}

my $says_large = '[large] gpt-4o says: I read 1 message; your last one had 1 word.';
my $mock_error = sub {
    my ($code, $type) = @_;
    return json_encode({ error => { code => undef, message => "mock error $code", param => undef,
                                    type => $type } });
};

plan tests => 50;

# ------------------------------------------------------------ what fails over

my ($d, $r) = outcome();
is $d, '200 mini mini/default, sent: mini=1', 'no failure: the first model answers, alone';

($d, $r) = outcome(model => 'dead');
is $d, '200 large large/client, sent: large=1', 'refused connection: the next model answers';
is content_of($r), $says_large, 'refused connection: the fallback\'s answer';

($d, $r) = outcome(headers => only('mini', 'X-Mock-Status' => 500));
is $d, '200 large large/default, sent: mini=1 large=1', '500: the next model answers';

# the client never sees the failed attempt: one status line, the
# fallback's headers and body, nothing of the 500
subtest 'the failed attempt is invisible' => sub {
    plan tests => 7;
    is scalar(() = $r->{raw} =~ m{HTTP/1\.\d \d{3}}g), 1, 'one status line';
    is $r->{headers}{'x-mock-provider'}, 'large', 'X-Mock-Provider of the fallback only';
    is $r->{headers}{'x-llm-upstream'}, 'gpt-4o', 'X-LLM-Upstream is the fallback\'s';
    is $r->{headers}{'content-type'}, 'application/json', 'Content-Type';
    is content_of($r), $says_large, 'content of the fallback';
    is $r->{json}{model}, 'gpt-4o', 'model in the answer';
    unlike $r->{raw}, qr/mock error|mini/, 'nothing of the failed answer';
};

# 429s go to models of their own: a 429 may put its model in a cooldown
($d, $r) = outcome(model => 'rl_json', headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 30));
is $d, '200 large large/client, sent: mini=1 large=1', '429: the next model answers';
is $r->{headers}{'retry-after'}, undef, '429: the client gets no Retry-After';

($d, $r) = outcome(headers => only('mini', 'X-Mock-Status' => 400));
is_deeply [$d, $r->{body}], ['400 mini mini/default, sent: mini=1', $mock_error->(400, 'invalid_request_error')],
          '400 (not in the list): passed through as is, no failover';

($d, $r) = outcome(headers => only('mini', 'X-Mock-Status' => 418));
is_deeply [$d, $r->{body}], ['418 mini mini/default, sent: mini=1', $mock_error->(418, 'invalid_request_error')],
          '418 by default: passed through';

($d, $r) = outcome(path => '/teapot/inner', headers => only('mini', 'X-Mock-Status' => 418));
is $d, '200 large large/default, sent: mini=1 large=1',
   'llm_router_fallback_status 418 (inherited): 418 fails over';

($d, $r) = outcome(path => '/teapot/inner', headers => only('mini', 'X-Mock-Status' => 500));
is_deeply [$d, $r->{body}], ['500 mini mini/default, sent: mini=1', $mock_error->(500, 'server_error')],
          'llm_router_fallback_status 418: the list replaces the default, 500 is passed through';

($d, $r) = outcome(path => '/teapot/inner', model => 'dead');
is_deeply [$d, $r->{headers}{'content-type'}, ref $r->{json} eq 'HASH' && $r->{json}{error}{message}],
          ['502 - dead/client, sent: none', 'application/json', 'the model provider could not be reached'],
          'a refused connection that is not in the list: nginx\'s 502, as JSON';

($d, $r) = outcome(headers => only('mini', 'X-Mock-Delay-Ms' => 3000));
is $d, '200 large large/default, sent: mini=1 large=1', 'timeout: the next model answers';
ok $r->{elapsed} >= 0.28 && $r->{elapsed} < 1.5, 'timeout: the request takes the timeout, not the delay'
    or diag "took $r->{elapsed} s";

($d, $r) = outcome(headers => only('mini', 'X-Mock-Close' => 'before'));
is_deeply [$d, content_of($r)], ['200 large large/default, sent: mini=1 large=1', $says_large],
          'connection closed without an answer: the next model answers';

($d, $r) = outcome(headers => only('mini,large', 'X-Mock-Status' => 503));
is $d, '200 backup backup/default, sent: mini=1 large=1 backup=1', 'chain of three: the third answers';
is content_of($r), '[backup] backup-1 says: I read 1 message; your last one had 1 word.',
   'chain of three: the third\'s answer';

($d, $r) = outcome(headers => { 'X-Mock-Status' => 503 });
is_deeply [$d, $r->{body}], ['503 backup backup/default, sent: mini=1 large=1 backup=1', $mock_error->(503, 'server_error')],
          'all fail: the last provider\'s status and body';

($d, $r) = outcome(model => 'lastdead', headers => { 'X-Mock-Status' => 500 });
is_deeply [$d, $r->{headers}{'content-type'}, $r->{json}],
          ['502 - gone/client, sent: mini=1', 'application/json',
           { error => { message => 'the model provider could not be reached', type => 'server_error',
                        param => undef, code => undef } }],
          'all fail, the last refuses: nginx\'s 502 as a JSON error';

($d, $r) = outcome(model => 'large', headers => only('large,backup', 'X-Mock-Delay-Ms' => 3000));
is_deeply [$d, $r->{json}, $r->{elapsed} >= 0.58 && $r->{elapsed} < 2 ? 'two timeouts' : "$r->{elapsed} s"],
          ['504 - backup/client, sent: large=1 backup=1',
           { error => { message => 'the model provider did not answer in time', type => 'server_error',
                        param => undef, code => undef } }, 'two timeouts'],
          'all time out: nginx\'s 504 as a JSON error, after two timeouts';

($d, $r) = outcome(model => 'dead', headers => only('large,backup', 'X-Mock-Status' => 500));
is_deeply [$d, $r->{body}], ['500 backup backup/client, sent: large=1 backup=1', $mock_error->(500, 'server_error')],
          'refused, then 500 twice: the last 500';

($d, $r) = outcome(model => 'dead', headers => only('large', 'X-Mock-Status' => 400));
is $d, '400 large large/client, sent: large=1', 'refused, then a 400: the 400, no third try';

# nginx writes a record after the answer: wait for the 400's to count them
my @records;
for (1 .. 100) {
    @records = $t->access_log_records('llm.log');
    last if @records && $records[-1]{status} == 400;
    select undef, undef, undef, 0.05;
}
my $logged = @records;
($d, $r) = outcome(headers => only('mini', 'X-Mock-Status' => 502));
my $rec = ($t->access_log_records('llm.log', $logged + 1))[$logged] // {};
is_deeply [@$rec{qw(model upstream_model status)}], ['large', 'gpt-4o', 200],
          'the log record names the final model';

# ------------------------------------------------------------ the rewrite

# the fallback gets the client's body byte for byte but its own "model",
# and its own credential, never the first model's nor the client's
my $raw = qq({"messages":[{"role":"user","content":"hi"}], "model" : "auto" ,"temperature":0.5}\n);
my $for_large = qq({"messages":[{"role":"user","content":"hi"}], "model" : "gpt-4o" ,"temperature":0.5}\n);
$r = $t->chat(body => $raw, headers => [%{ only('mini', 'X-Mock-Status' => 500) },
                                        Authorization => 'Bearer sk-client', 'X-Api-Key' => 'sk-client']);
is $r->{headers}{'x-mock-provider'}, 'large', 'rewrite: the fallback answered';
bytes_is $t->capture('mini')->{body},
         qq({"messages":[{"role":"user","content":"hi"}], "model" : "gpt-4o-mini" ,"temperature":0.5}\n),
         'rewrite: the first model\'s body';
bytes_is $t->capture('large')->{body}, $for_large,
         'rewrite: the fallback\'s body: its model, the rest byte for byte';
my ($hm, $h) = map { $t->capture($_)->{headers} } qw(mini large);
is_deeply [$hm->{authorization}, $hm->{'x-api-key'},
           $h->{authorization}, $h->{'x-api-key'}, $h->{'content-length'}],
          [['Bearer sk-mini'], undef, ['Bearer sk-large'], undef, [length $for_large]],
          'rewrite: each try has its own model\'s credential only, and its Content-Length';

($d, $r) = outcome(headers => only('mini,large', 'X-Mock-Status' => 500));
$h = $t->capture('backup')->{headers};
is_deeply [$d, $h->{authorization}, $t->upstream_json('backup')->{model}],
          ['200 backup backup/default, sent: mini=1 large=1 backup=1', ['Bearer sk-backup'], 'backup-1'],
          'rewrite: the third try has the third credential, once';

# ------------------------------------------------------------ context window

($d, $r) = outcome(model => 'ctx', headers => only('mini', 'X-Mock-Status' => 500));
is $d, '200 tiny tiny/client, sent: mini=1 tiny=1', 'context: a short request fits the small fallback';

($d, $r) = outcome(model => 'ctx', text => words(40), headers => only('mini', 'X-Mock-Status' => 500));
is $d, '200 backup backup/client, sent: mini=1 backup=1',
   'context: a long prompt skips the small fallback, the next answers';

($d, $r) = outcome(model => 'ctx', fields => { max_tokens => 100 },
                   headers => only('mini', 'X-Mock-Status' => 500));
is $d, '200 backup backup/client, sent: mini=1 backup=1',
   'context: a short prompt with a large max_tokens skips it too';

# ------------------------------------------------------------ streams

my $stream = { stream => JSON::PP::true };

($d, $r) = outcome(fields => $stream, headers => only('mini', 'X-Mock-Close' => 'before'));
is $d, '200 large large/default, sent: mini=1 large=1', 'stream, closed before the first byte: fails over';
is_deeply [$r->{headers}{'content-type'}, stream_text($r), $r->{events}[-1],
           scalar(grep { ref $_ eq 'HASH' && $_->{model} ne 'gpt-4o' } @{ $r->{events} }),
           scalar(grep { ref $_ eq 'HASH' && $_->{usage} } @{ $r->{events} })],
          ['text/event-stream', $says_large, '[DONE]', 0, 0],
          'stream, closed before: one complete stream, all of it from the fallback, without the usage it did not ask for';
like $r->{raw}, qr/\r\n0\r\n\r\n\z/, 'stream, closed before: the client\'s stream ends properly';
bytes_is $t->capture('large')->{body},
         '{"messages":[{"content":"hi","role":"user"}],"model":"gpt-4o",'
         . '"stream_options":{"include_usage":true},"stream":true}',
         'stream: the fallback\'s body has its model and stream_options';

($d, $r) = outcome(model => 'rl_stream', fields => $stream, headers => only('mini', 'X-Mock-Status' => 429));
is_deeply [$d, stream_text($r), $r->{events}[-1]],
          ['200 large large/client, sent: mini=1 large=1', $says_large, '[DONE]'],
          'stream, 429: the fallback\'s stream';

($d, $r) = outcome(fields => $stream, settle => 0.3, headers => only('mini', 'X-Mock-Close' => 'after'));
is $d, '200 mini mini/default, sent: mini=1',
   'stream, closed after the first byte: no failover, the fallback received nothing';
is_deeply [scalar @{ $r->{events} }, (map { $_->{model} } @{ $r->{events} }),
           $r->{events}[0]{choices}[0]{delta}{role}, stream_text($r)],
          [2, 'gpt-4o-mini', 'gpt-4o-mini', 'assistant', '[mini] gpt-4o-'],
          'stream, closed after: the client has the truncated stream of the first model only';
unlike $r->{raw}, qr/\r\n0\r\n\r\n\z/,
       'stream, closed after: no terminating chunk, the truncation is not hidden';

# a JSON answer cut after its header: the client has the first model's
# header and half its body, and nginx closes the connection as it does
# without failover, so that a kept-alive client cannot mistake what comes
# next for the rest of the body
{
    my $conn = $t->connect;
    my $before = sent_counts();
    my $r = $t->ask('hi', conn => $conn, timeout => 1, headers => only('mini', 'X-Mock-Close' => 'after'));
    my $closed = IO::Select->new($conn)->can_read(1) && !sysread($conn, my $buf, 1);
    close $conn;
    my $after = sent_counts();
    is_deeply [$r->{status}, $r->{headers}{'x-mock-provider'}, length($r->{body}) < $r->{headers}{'content-length'},
               $after->{large} - $before->{large}, $closed ? 'closed' : 'kept alive'],
              [200, 'mini', 1, 0, 'closed'],
              'JSON, closed after the header: truncated answer of the first model, connection closed';
}

# ------------------------------------------------------------ keep-alive

my $conn = $t->connect;
my @got;
for my $req ([headers => only('mini', 'X-Mock-Status' => 500)],
             [],
             [model => 'dead'],
             [fields => $stream, headers => only('mini', 'X-Mock-Close' => 'before')],
             [headers => { 'X-Mock-Status' => 503 }],
             [headers => only('mini', 'X-Mock-Delay-Ms' => 3000)],
             [headers => only('mini,large', 'X-Mock-Status' => 502)]) {
    my $r = $t->ask('hi', conn => $conn, @$req);
    push @got, join ' ', $r->{status}, $r->{headers}{'x-mock-provider'} // '-',
                         content_of($r) // stream_text($r) || $r->{body};
}
close $conn;
is_deeply \@got,
          ["200 large $says_large",
           '200 mini [mini] gpt-4o-mini says: I read 1 message; your last one had 1 word.',
           "200 large $says_large",
           "200 large $says_large",
           '503 backup ' . $mock_error->(503, 'server_error'),
           "200 large $says_large",
           '200 backup [backup] backup-1 says: I read 1 message; your last one had 1 word.'],
          'keep-alive: several failovers in a row on one connection';

# ------------------------------------------------------------ configuration

my $c = LLMRouterTest->new;

sub conf_check { return $c->config_error(@_) }

my $m = sub { my ($name, $fallback) = @_;
              "llm_router_model $name { url http://127.0.0.1:1/v1; model $name-1; auth none;"
              . (defined $fallback ? " fallback $fallback;" : '') . ' }' };

is conf_check($m->('a', 'b') . $m->('b', 'c') . $m->('c'), ''), 'passed', 'config: a chain of three is valid';
like conf_check($m->('a', 'x') . $m->('y', 'x'), ''),
     qr/^unknown model "x" in "fallback" of llm_router_model "a"(?: in nginx\.conf:N)?$/,
     'config: unknown fallback model';
like conf_check($m->('a', 'a'), ''),
     qr/^the fallbacks of llm_router_model "a" come back to it(?: in nginx\.conf:N)?$/,
     'config: a model that falls back to itself';
like conf_check($m->('a', 'b') . $m->('b', 'c') . $m->('c', 'b'), ''),
     qr/^the fallbacks of llm_router_model "[bc]" come back to it(?: in nginx\.conf:N)?$/,
     'config: a fallback loop (b -> c -> b, behind a)';
like conf_check($m->('a', 'b') . $m->('b', 'a'), ''),
     qr/^the fallbacks of llm_router_model "[ab]" come back to it(?: in nginx\.conf:N)?$/,
     'config: a loop of two';
is_deeply [map { conf_check($m->('a'), "llm_router_fallback_status $_;") } '399', '600', 'abc', '500 20x', '-429'],
          [map { qq(invalid status "$_" in "llm_router_fallback_status", 400 to 599 expected in nginx.conf:N) }
               '399', '600', 'abc', '20x', '-429'],
          'config: invalid llm_router_fallback_status values';
is conf_check($m->('a'), 'llm_router_fallback_status 500; llm_router_fallback_status 502;'),
   '"llm_router_fallback_status" directive is duplicate in nginx.conf:N', 'config: llm_router_fallback_status twice';
is conf_check($m->('a'), 'llm_router_fallback_status 400 599 418;'), 'passed',
   'config: llm_router_fallback_status 400 599 418 is valid';

$t->stop;
