#!/usr/bin/perl
# $llm_router_log: one JSON record per request, usage read from the
# provider's answer (JSON body or SSE usage chunk, however it is split or
# buffered), the estimate when there is none, and the cost arithmetic.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(user words json_encode);

my $t = LLMRouterTest->new;
$t->mock($_) for qw(mini large);
$t->config(<<'EOF')->run;
llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; auth none; price 0.15 0.60; context 128000; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      auth none; price 2.50 10.00; }
llm_router_model free  { url %%URL_mini%%;  model free-model;  auth none; price 0 0; }

log_format llm  escape=none '$llm_router_log';
log_format vars '$llm_router_model|$llm_router_upstream_model|$llm_router_rule|$llm_router_est_tokens|$llm_router_cost|$llm_router_url';

server {
    listen 127.0.0.1:%%PORT%%;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        llm_router_pin large free;              # clients pin them too
        access_log %%PREFIX%%/vars.log vars;    # first: written when llm.log is
        access_log %%PREFIX%%/llm.log llm;
        proxy_pass $llm_router_url;
    }

    location = /http11 {                # chunked answers from the provider
        llm_router on;
        llm_router_default mini;
        access_log %%PREFIX%%/llm.log llm;
        proxy_http_version 1.1;
        proxy_pass $llm_router_url;
    }

    location = /slow {                  # answers buffered to a temp file
        llm_router on;
        llm_router_default mini;
        access_log %%PREFIX%%/llm.log llm;
        proxy_buffers 4 1k;
        proxy_buffer_size 1k;
        limit_rate 100k;
        proxy_pass $llm_router_url;
    }
}
EOF

my %price = (mini => [0.15, 0.60], large => [2.50, 10.00], free => [0, 0]);
my @KEYS = qw(api model upstream_model rule stream est_tokens messages prompt_tokens
              completion_tokens cached_tokens cache_write_tokens reasoning_tokens
              usage_source cost_usd status latency_ms);

# Send a request, then check its log record: the listed fields exactly,
# usage against the answer (or integers for an estimate) and the cost.
sub logged {
    my ($name, $want, %req) = @_;
    my $r = $t->chat(%req);
    my $rec = $t->next_record('llm.log') // {};
    my $usage = usage_in($r);
    my $estimate = ($want->{usage_source} // '') eq 'estimate';
    my $asked = ($req{body}{stream_options} // {})->{include_usage};

    subtest $name => sub {
        plan tests => 7;
        like json_encode([$rec->{cost_usd}]), qr/^\[[0-9]/, 'cost_usd is a JSON number';
        is_deeply [grep { !exists $rec->{$_} } @KEYS], [], 'all keys present'
            or diag explain $rec;
        is_deeply { map { $_ => plain($rec->{$_}) } keys %$want }, $want, 'fields';
        if ($estimate) {
            ok !$usage, 'the answer had no usage';
            like "$rec->{prompt_tokens}/$rec->{completion_tokens}", qr{^[1-9][0-9]*/[0-9]+$},
                 'estimated tokens are integers';
        } elsif ($r->{events} && !$asked) {
            # the usage the router asked for is logged, not sent
            ok !(grep { ref $_ && exists $_->{usage} } @{ $r->{events} }) || diag(json_encode([grep { ref $_ && exists $_->{usage} } @{ $r->{events} }])),
               'the client got no usage it did not ask for';
            like "$rec->{prompt_tokens}/$rec->{completion_tokens}", qr{^[1-9][0-9]*/[1-9][0-9]*$},
                 'tokens from the answer';
        } else {
            ok $usage, 'the answer had usage';
            is "$rec->{prompt_tokens}/$rec->{completion_tokens}",
               "$usage->{prompt_tokens}/$usage->{completion_tokens}", 'tokens from the answer';
        }
        my ($in, $out) = @{ $price{ $rec->{model} // 'mini' } };
        my $cost = ($rec->{prompt_tokens} * $in + $rec->{completion_tokens} * $out) / 1e6;
        ok abs($rec->{cost_usd} - $cost) < 1e-12, 'cost_usd = tokens x prices'
            or diag "cost_usd $rec->{cost_usd}, expected $cost";
        like "$rec->{est_tokens}/$rec->{latency_ms}", qr{^[0-9]+/[0-9]+(?:\.[0-9]+)?$},
             'est_tokens and latency_ms are numbers';
    };
    return ($r, $rec);
}

# JSON::PP booleans as 'true'/'false' so that is_deeply can compare them.
sub plain {
    my ($v) = @_;
    return JSON::PP::is_bool($v) ? ($v ? 'true' : 'false') : $v;
}

# The usage object of a JSON answer or of the SSE usage chunk.
sub usage_in {
    my ($r) = @_;
    return $r->{json}{usage} if $r->{json};
    my ($u) = map { $_->{usage} } grep { ref $_ && $_->{usage} } @{ $r->{events} };
    return $u;
}

sub body { { model => 'auto', messages => [user($_[0] // 'Hello, how are you?')], @_[1 .. $#_] } }

my %ok = (model => 'mini', upstream_model => 'gpt-4o-mini', rule => 'default',
          messages => 1, status => 200, stream => 'false', usage_source => 'response');
my %stream = (%ok, stream => 'true');
my %estimate = (usage_source => 'estimate');

plan tests => 19 + 3 + 1;

my ($r, $rec) = logged('JSON answer', \%ok, body => body());
my @vars = split /\|/, (split /\n/, $t->read_file('vars.log'))[-1] // '';
$vars[4] = $vars[4] == $rec->{cost_usd} ? 'cost_usd' : "$vars[4] != $rec->{cost_usd}"
    if defined $vars[4];
is join('|', @vars), join('|', 'mini', 'gpt-4o-mini', 'default', $rec->{est_tokens}, 'cost_usd',
                          'http://127.0.0.1:' . $t->mock_info('mini')->{port} . '/v1/chat/completions'),
   'variables $llm_router_model ... $llm_router_url';

logged('JSON answer, 3 messages', { %ok, messages => 3 },
       body => { model => 'auto', messages => [user('one two'), { role => 'assistant', content => 'three' }, user('four')] });
logged('SSE answer with injected include_usage', \%stream, body => body(undef, stream => JSON::PP::true));
logged('JSON answer without usage', { %ok, %estimate }, body => body(),
       headers => { 'X-Mock-Usage' => 'none' });
logged('SSE answer without usage', { %stream, %estimate }, body => body(undef, stream => JSON::PP::true),
       headers => { 'X-Mock-Usage' => 'none' });
logged('SSE, client turned include_usage off', \%stream,
       body => body(undef, stream => JSON::PP::true, stream_options => { include_usage => JSON::PP::false }));
logged('SSE, client asked for usage', \%stream,
       body => body(undef, stream => JSON::PP::true, stream_options => { include_usage => JSON::PP::true }));
logged('JSON answer chunked, split inside "usage"', \%ok, path => '/http11', body => body(),
       headers => { 'X-Mock-Chunked' => 1 });
logged('JSON answer close-delimited, split inside "usage"', \%ok, body => body(),
       headers => { 'X-Mock-Chunked' => 1 });
logged('large JSON answer through a temp file', \%ok, path => '/slow', body => body(),
       headers => { 'X-Mock-Reply-Bytes' => 150000 });
logged('large SSE answer through a temp file', \%stream, path => '/slow',
       body => body(undef, stream => JSON::PP::true), headers => { 'X-Mock-Reply-Bytes' => 150000 });
logged('large SSE answer chunked', \%stream, path => '/http11',
       body => body(undef, stream => JSON::PP::true), headers => { 'X-Mock-Reply-Bytes' => 50000 });
logged('pinned model, its own prices', { %ok, model => 'large', upstream_model => 'gpt-4o', rule => 'client' },
       body => { model => 'large', messages => [user(words(300))] });
logged('model without a price costs 0', { %ok, model => 'free', upstream_model => 'free-model',
       rule => 'client', cost_usd => 0 }, body => { model => 'free', messages => [user('hi')] });

($r, $rec) = logged('slow provider', \%ok, body => body(), headers => { 'X-Mock-Delay-Ms' => 300 });
ok $rec->{latency_ms} >= 300 && $rec->{latency_ms} < 5000, 'latency_ms counts the provider time'
    or diag "latency_ms $rec->{latency_ms}";

$r = $t->chat(body => body(), headers => { 'X-Mock-Status' => 503 });
$rec = $t->next_record('llm.log') // {};
is_deeply [@$rec{qw(status model rule)}, exists $rec->{error}], [503, 'mini', 'default', ''],
          'provider error: status logged, no "error"';

$r = $t->chat(body => '{"model":"auto",');
$rec = $t->next_record('llm.log') // {};
is_deeply [@$rec{qw(status model rule)}, ref \$rec->{error}, length($rec->{error} // '') > 0],
          [400, undef, undef, 'SCALAR', 1], 'rejected request: "error", model and rule null'
    or diag explain $rec;

# client bytes in an error never break the (escape=none) JSON record
my @nasty = (qq|{"model":"a\\"b\x01\n\\\\ \xff|, qq|{"messages":[}"\\u0000\t'</x>|, qq|\xc3(\x80"|);
$t->chat(body => $_) for @nasty;
is_deeply [map { my $r = $t->next_record('llm.log') // {}; "$r->{status} " . (ref \$r->{error}) }
           @nasty], [('400 SCALAR') x @nasty], 'errors with odd client bytes: valid JSON records';

# usage never leaks from one request to the next on a kept-alive connection
my $conn = $t->connect;
$t->chat(conn => $conn, body => body(undef, stream => JSON::PP::true));
$t->chat(conn => $conn, body => body(), headers => { 'X-Mock-Usage' => 'none' });
close $conn;
is_deeply [map { plain($_->{stream}) . '/' . $_->{usage_source} } map { $t->next_record('llm.log') // {} } 1, 2],
          ['true/response', 'false/estimate'], 'keep-alive: a record per request';

like $t->error_log, qr/an upstream response is buffered to a temporary file/,
     '(the /slow answers did go through a temp file)';

$t->stop;
