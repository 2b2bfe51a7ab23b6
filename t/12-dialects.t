#!/usr/bin/perl
# The three dialects, each routed natively through real nginx: OpenAI
# Chat Completions, Anthropic Messages and OpenAI Responses.  Requests
# and answers, plain and streamed; the conditions of agent traffic; the
# provider's key in its own header; usage with cached, cache-write and
# reasoning tokens, priced exactly; errors in each dialect's shape; a
# decision for a model of another dialect; failover and escalation
# within a dialect; budgets and metrics; the nginx -t dialect check.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(route_of json_encode json_decode usd bytes_is);

plan tests => 56;

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('claude', key => 'sk-ant', auth => 'x-api-key');
$t->mock('resp', key => 'sk-resp');

# prices in pico-USD per token: input, output, cached, cache write
my %PRICE = (
    mini   => [150_000, 600_000, 75_000, 150_000],       # chat convention
    haiku  => [1_000_000, 5_000_000, 100_000, 1_250_000],   # Anthropic's
    sonnet => [3_000_000, 15_000_000, 300_000, 3_750_000],
    nano   => [50_000, 400_000, 5_000, 50_000],          # cached= given
    gpt5   => [1_250_000, 10_000_000, 625_000, 1_250_000],
);

$t->config(<<'EOF')->run;
llm_router_zone llm 1m;

llm_router_model mini   { url %%URL_mini%%; model gpt-4o-mini; key sk-mini;
                          price 0.15 0.60; }
llm_router_model haiku  { api messages; model claude-haiku-4-5; key sk-ant;
                          url http://127.0.0.1:%%PORT_claude%%/v1/messages;
                          price 1 5; escalate sonnet; }
llm_router_model sonnet { api messages; model claude-sonnet-4-5; key sk-ant;
                          url http://127.0.0.1:%%PORT_claude%%/v1/messages;
                          price 3 15; }
llm_router_model nano   { api responses; model gpt-5-nano; key sk-resp;
                          url http://127.0.0.1:%%PORT_resp%%/v1/responses;
                          price 0.05 0.40 cached=0.005; fallback gpt5; }
llm_router_model gpt5   { api responses; model gpt-5; key sk-resp;
                          url http://127.0.0.1:%%PORT_resp%%/v1/responses;
                          price 1.25 10; }

llm_router_budget team key=$http_x_team limit=0.000001 period=hour action=reject;

log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;
    access_log %%PREFIX%%/llm.log llm;
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    location = /v1/messages {
        llm_router on;
        llm_router_rule background $llm_router_requested_model~haiku haiku;
        llm_router_rule think thinking sonnet;
        llm_router_rule pictures images sonnet;
        llm_router_rule search tool=web_search sonnet;
        llm_router_default haiku;
        llm_router_escalate on;
        proxy_pass $llm_router_url;
    }

    location = /v1/responses {
        llm_router on;
        llm_router_default nano;
        proxy_pass $llm_router_url;
    }

    location = /budget/v1/messages {
        llm_router on;
        llm_router_budget team;
        llm_router_default haiku;
        proxy_pass $llm_router_url;
    }

    # auto: a Messages request whose rule names a chat model
    location = /mixed/v1/messages {
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    # a small Messages model triages a Messages request
    location = /triaged/v1/messages {
        llm_router on;
        llm_router_triage /_triage model=haiku cache=off;
        llm_router_rule triaged triage=complex sonnet;
        llm_router_default haiku;
        proxy_pass $llm_router_url;
    }

    location = /_triage {
        internal;
        proxy_set_header X-Mock-Reply $http_x_triage;
        proxy_pass $llm_router_url;
    }

    location = /explain/v1/messages {
        llm_router_default mini;
        llm_router_explain;
    }

    location = /status {
        llm_router_status;
    }
}
EOF

sub post {
    my ($path, $body, %headers) = @_;
    return $t->http(method => 'POST', path => $path,
                    headers => ['Content-Type' => 'application/json', %headers],
                    body => ref $body ? json_encode($body) : $body);
}

sub messages { { model => 'claude-sonnet-4-5', max_tokens => 64, messages => [{ role => 'user', content => $_[0] }], @_[1 .. $#_] } }

# the cost of a record's tokens at the model's prices, as the log writes it
sub cost_of {
    my ($rec) = @_;
    my ($in, $out, $cached, $write) = @{ $PRICE{ $rec->{model} } };
    my $fresh = $rec->{prompt_tokens} - $rec->{cached_tokens} - $rec->{cache_write_tokens};
    return usd($fresh * $in + $rec->{cached_tokens} * $cached
               + $rec->{cache_write_tokens} * $write + $rec->{completion_tokens} * $out);
}


# ------------------------------------------------------------ Messages

my $r = post('/v1/messages', messages('Hello there'),
             'x-api-key' => 'client-key', 'anthropic-version' => '2023-06-01',
             'anthropic-beta' => 'prompt-caching-2024-07-31',
             'X-Mock-Cached' => 5000, 'X-Mock-Cache-Write' => 1000);
my $rec = $t->next_record('llm.log');
my $cap = $t->capture('claude');

is "$r->{status} " . route_of($r), '200 sonnet/client', 'messages: pinned by the client\'s model';
is $r->{json}{content}[0]{type}, 'text', 'messages: an Anthropic answer';
is_deeply [$cap->{headers}{'x-api-key'}, $cap->{headers}{authorization},
           $cap->{headers}{'anthropic-version'}, $cap->{headers}{'anthropic-beta'}],
          [['sk-ant'], undef, ['2023-06-01'], ['prompt-caching-2024-07-31']],
          'messages: the provider key in x-api-key, the Anthropic headers passed';
my $u = $r->{json}{usage};
is_deeply [@$rec{qw(api prompt_tokens completion_tokens cached_tokens cache_write_tokens usage_source)}],
          ['messages', $u->{input_tokens} + 5000 + 1000, $u->{output_tokens}, 5000, 1000, 'response'],
          'messages: cache reads and writes in the prompt, logged apart';
cmp_ok $rec->{cost_usd}, '==', cost_of($rec), 'messages: each kind of token at its price';

$r = post('/v1/messages', messages('Hello there', stream => JSON::PP::true),
          'anthropic-version' => '2023-06-01', 'X-Mock-Cached' => 40);
$rec = $t->next_record('llm.log');
my $up = $t->upstream_json('claude');
ok !exists $up->{stream_options}, 'messages stream: no stream_options upstream';
{
    my $ref = $t->http(port => $t->mock_info('claude')->{port}, method => 'POST', path => '/v1/messages',
                       headers => ['Content-Type' => 'application/json', 'x-api-key' => 'sk-ant',
                                   'X-Mock-Cached' => 40, 'X-Mock-Event-Delay-Ms' => 0],
                       body => $cap = $t->capture('claude')->{body});
    (my $got = $r->{body}) =~ s/msg_mock_\w+/ID/g;
    (my $want = $ref->{body}) =~ s/msg_mock_\w+/ID/g;
    bytes_is $got, $want, 'messages stream: byte for byte what the provider sent';
    my ($start) = grep { ref $_ eq 'HASH' && $_->{type} eq 'message_start' } @{ $ref->{events} };
    my ($delta) = grep { ref $_ eq 'HASH' && $_->{type} eq 'message_delta' } @{ $ref->{events} };
    is_deeply [@$rec{qw(stream prompt_tokens completion_tokens cached_tokens usage_source)}],
              [JSON::PP::true, $start->{message}{usage}{input_tokens} + 40, $delta->{usage}{output_tokens},
               40, 'response'],
              'messages stream: usage of message_start and of an older message_delta';
}

$r = post('/v1/messages', messages('Hello', stream => JSON::PP::true), 'X-Mock-Usage-Form' => 'full',
          'X-Mock-Cache-Write' => 7);
$rec = $t->next_record('llm.log');
is_deeply [@$rec{qw(cache_write_tokens usage_source)}], [7, 'response'],
          'messages stream: the newer message_delta, with every count';

# rules for agent traffic
my %cases = (
    'background work asks for haiku' => [messages('title this', model => 'claude-haiku-4-5-20251001'), 'haiku/background'],
    'thinking'                       => [messages('prove it', model => 'x', thinking => { type => 'enabled', budget_tokens => 2048 }), 'sonnet/think'],
    'thinking disabled'              => [messages('prove it', model => 'x', thinking => { type => 'disabled' }), 'haiku/default'],
    'an image'                       => [{ model => 'x', max_tokens => 9, messages => [{ role => 'user', content => [
                                            { type => 'text', text => 'what is it' },
                                            { type => 'image', source => { type => 'base64', media_type => 'image/png', data => 'iVBORw0KGgo=' } }] }] },
                                         'sonnet/pictures'],
    'a built-in tool'                => [messages('look it up', model => 'x', tools => [{ type => 'web_search_20250305', name => 'web_search' }]), 'sonnet/search'],
    'another tool'                   => [messages('look it up', model => 'x', tools => [{ name => 'calc', input_schema => { type => 'object' } }]), 'haiku/default'],
);
for my $name (sort keys %cases) {
    my ($body, $route) = @{ $cases{$name} };
    is route_of(post('/v1/messages', $body)), $route, "messages rule: $name";
    $t->next_record('llm.log');
}

# errors in the Anthropic shape
$r = post('/v1/messages', '{"model":"x","messages":[]}');
is_deeply [$r->{status}, $r->{json}{type}, $r->{json}{error}{type}, $r->{json}{error}{message}],
          [400, 'error', 'invalid_request_error', "'messages' must be a non-empty array"],
          'messages: a bad request answered in the Anthropic shape';
$t->next_record('llm.log');

$r = post('/v1/messages', messages('hi', model => 'x'), 'X-Mock-Status' => 503, 'X-Mock-Only' => 'claude');
is_deeply [$r->{status}, $r->{json}{type}], [503, 'error'],
          'messages: the provider\'s own error passed as it is';
$t->next_record('llm.log');

# escalation within the dialect: haiku stops at max_tokens, sonnet answers
$r = post('/v1/messages', messages('hi', model => 'x'), 'X-Mock-Finish' => 'length',
          'X-Mock-Only' => 'claude');
$rec = $t->next_record('llm.log');
is_deeply [$r->{status}, $r->{json}{model}, $rec->{escalation_reason}, join(' ', map { $_->{model} } @{ $rec->{attempts} })],
          [200, 'claude-sonnet-4-5', 'length', 'haiku sonnet'],
          'messages: max_tokens escalates to the stronger model';

# a spent budget: an Anthropic rate limit error the SDK does not retry
$r = post('/budget/v1/messages', messages('hi', model => 'x'), 'X-Team' => 'a');
is_deeply [$r->{status}, $r->{json}{error}{type}, $r->{headers}{'x-should-retry'}, defined $r->{headers}{'retry-after'} ? 1 : 0],
          [429, 'rate_limit_error', 'false', 1],
          'messages budget: 429 rate_limit_error, x-should-retry false, Retry-After';
$t->next_record('llm.log');

# a decision for a model of another dialect
my $before = () = $t->requests('mini');
$r = post('/mixed/v1/messages', messages('hi', model => 'x'));
my $after = () = $t->requests('mini');
is_deeply [$r->{status}, $r->{json}{error}{type}, $r->{headers}{'x-should-retry'}, $after - $before],
          [500, 'api_error', 'false', 0],
          'auto: a chat model for a Messages request is a 500, nothing sent';
like $r->{json}{error}{message}, qr/"mini" \(rule "default"\), which speaks the "chat" API, for a request of the "messages" API/,
     '  the error names both dialects';
$t->next_record('llm.log');

# a client names a model of another dialect: not pinned
is route_of(post('/v1/messages', messages('hi', model => 'gpt-4o-mini'))), 'haiku/default',
   'messages: a chat model named by the client is not pinned';
$t->next_record('llm.log');

$r = post('/explain/v1/messages', messages('hi', model => 'x'));
is_deeply [$r->{status}, $r->{json}{error}{type}], [500, 'api_error'],
          'explain: a decision for a model of another dialect is refused too';
$t->next_record('llm.log');

# triage by a Messages model, asked in its own dialect
$before = () = $t->requests('claude');
$r = post('/triaged/v1/messages', messages('why is the sky blue?', model => 'x'), 'X-Triage' => 'complex');
$rec = $t->next_record('llm.log');
my @asked = ($t->requests('claude'))[$before .. $before + 1];
is_deeply [route_of($r), $rec->{triage}{verdict}, $rec->{triage_error}],
          ['sonnet/triaged', 'complex', undef], 'triage: a Messages model judges in its dialect';
is_deeply [map { s/ bytes=\d+$//r } @asked],
          ['POST /v1/messages model=claude-haiku-4-5', 'POST /v1/messages model=claude-sonnet-4-5'],
          '  the triage call and the answer, both Messages requests';
ok $rec->{triage}{cost_usd} > 0, '  the triage call billed from its Anthropic usage';

# ------------------------------------------------------------ Responses

$r = post('/v1/responses', { model => 'gpt-5', input => 'Write a haiku about nginx' },
          Authorization => 'Bearer client-key', 'X-Mock-Cached' => 64, 'X-Mock-Reasoning' => 30);
$rec = $t->next_record('llm.log');
$cap = $t->capture('resp');
is "$r->{status} " . route_of($r), '200 gpt5/client', 'responses: routed';
is_deeply [$cap->{headers}{authorization}, $t->upstream_json('resp')->{model}],
          [['Bearer sk-resp'], 'gpt-5'], 'responses: the provider key and model';
$u = $r->{json}{usage};
is_deeply [@$rec{qw(api messages prompt_tokens completion_tokens cached_tokens reasoning_tokens)}],
          ['responses', 1, $u->{input_tokens}, $u->{output_tokens}, 64, 30],
          'responses: usage with its details';
cmp_ok $rec->{cost_usd}, '==', cost_of($rec), 'responses: cached tokens at the convention\'s half price';

$r = post('/v1/responses', { model => 'auto', instructions => 'Be brief.', stream => JSON::PP::true,
                              input => [{ role => 'user', content => [{ type => 'input_text', text => 'hi' }] }] },
          'X-Mock-Cached' => 3);
$rec = $t->next_record('llm.log');
$up = $t->upstream_json('resp');
my ($done) = grep { ref $_ eq 'HASH' && $_->{type} eq 'response.completed' } @{ $r->{events} };
is_deeply [route_of($r), exists $up->{stream_options} ? 1 : 0, $rec->{prompt_tokens}, $rec->{cached_tokens}],
          ['nano/default', 0, $done->{response}{usage}{input_tokens}, 3],
          'responses stream: usage of response.completed, no stream_options upstream';
cmp_ok $rec->{cost_usd}, '==', cost_of($rec), 'responses stream: cached= priced as set';

$r = post('/v1/responses', { model => 'auto' });
is_deeply [$r->{status}, $r->{json}{error}{type}, $r->{json}{error}{message}],
          [400, 'invalid_request_error', "missing required parameter: 'input'"],
          'responses: a missing input in the OpenAI shape';
$t->next_record('llm.log');

$r = post('/v1/responses', { model => 'auto', previous_response_id => 'resp_1', input => 'and then?' });
is route_of($r), 'nano/default', 'responses: previous_response_id routed like any other';
$t->next_record('llm.log');

# failover within the dialect
$r = post('/v1/responses', { model => 'auto', input => 'hi' }, 'X-Mock-Status' => 500, 'X-Mock-Only' => 'resp');
$rec = $t->next_record('llm.log');
is_deeply [$r->{status}, join(' ', map { "$_->{model}:$_->{status}" } @{ $rec->{attempts} })],
          [500, 'nano:500 gpt5:500'], 'responses: failover tries the fallback of the same dialect';

# ------------------------------------------------------------ chat

$r = $t->ask('hello', headers => { 'X-Mock-Cached' => 4, 'X-Mock-Reasoning' => 5 });
$rec = $t->next_record('llm.log');
is_deeply [@$rec{qw(api cached_tokens reasoning_tokens)}, $rec->{prompt_tokens} - $r->{json}{usage}{prompt_tokens}],
          ['chat', 4, 5, 0], 'chat: cached and reasoning tokens';
cmp_ok $rec->{cost_usd}, '==', cost_of($rec), 'chat: cached tokens at half the price';

# the stream the client asked for, byte for byte, with and without usage
for my $asked (0, 1) {
    my %so = $asked ? (stream_options => { include_usage => JSON::PP::true }) : ();
    my $body = { model => 'gpt-4o-mini', messages => [{ role => 'user', content => 'hi' }],
                 stream => JSON::PP::true, %so };
    $r = $t->chat(body => $body);
    $rec = $t->next_record('llm.log');
    is_deeply [$t->upstream_json('mini')->{stream_options}, $rec->{usage_source}],
              [{ include_usage => JSON::PP::true }, 'response'],
              'chat stream ' . ($asked ? 'with' : 'without') . ' include_usage: usage asked upstream, and logged';
    my $ref = $t->http(port => $t->mock_info('mini')->{port}, method => 'POST', path => '/v1/chat/completions',
                       headers => ['Content-Type' => 'application/json', Authorization => 'Bearer sk-mini',
                                   'X-Mock-Event-Delay-Ms' => 0],
                       body => json_encode($body));
    my $norm = sub { $_[0] =~ s/"id":"chatcmpl-[\w-]+"/"id":"ID"/gr =~ s/"created":\d+/"created":0/gr };
    bytes_is $norm->($r->{body}), $norm->($ref->{body}),
             '  the client gets what the provider gives such a client';
}

# ------------------------------------------------------------ metrics

my $text = $t->http(path => '/status')->{body};
for my $m (qw(haiku sonnet nano gpt5 mini)) {
    like $text, qr/^llm_router_cost_usd_total\{model="$m"\} [0-9.]+$/m, "metrics: cost of $m";
}
like $text, qr/^llm_router_budget_actions_total\{budget="team",action="reject"\} 1$/m,
     'metrics: the Messages budget refusal';
like $text, qr/^llm_router_requests_total\{model="sonnet",rule="think"\} 1$/m,
     'metrics: requests by model and rule';

# ------------------------------------------------------------ nginx -t

my $models = <<'EOF';
llm_router_model a { url http://127.0.0.1:1/v1/chat/completions; auth none; }
llm_router_model m { api messages; url http://127.0.0.1:1/v1/messages; auth none; fallback a; }
llm_router_model r { api responses; url http://127.0.0.1:1/v1/responses; auth none; }
EOF
my $c = LLMRouterTest->new;
is $c->config_error($models, 'llm_router_api chat;'), 'passed', 'nginx -t: a chat location of chat models';
is $c->config_error($models, 'llm_router_api messages;'),
   '"llm_router_api messages" can reach model "a" of "api chat" by llm_router_default in nginx.conf:N',
   'nginx -t: a Messages location with a chat default';
is $c->config_error($models, 'llm_router_api chat; llm_router_rule x tokens>5 m;'),
   '"llm_router_api chat" can reach model "m" of "api messages" by llm_router_rule in nginx.conf:N',
   'nginx -t: a rule for a model of another api';
is $c->config_error($models, 'llm_router_api auto;'), 'passed', 'nginx -t: auto is checked per request';
is $c->config_error($models, 'llm_router_api soap;'),
   'invalid value "soap", "chat", "messages", "responses" or "auto" expected in nginx.conf:N',
   'nginx -t: an unknown api';
is $c->config_error(<<'EOF', 'llm_router_api chat;'),
llm_router_model a { url http://127.0.0.1:1/v1/chat/completions; auth none; api telex; }
EOF
   'invalid "api" in llm_router_model "a": chat, messages or responses expected in nginx.conf:N',
   'nginx -t: an unknown model api';
is $c->config_error(<<'EOF', ''),
llm_router_model a { url http://127.0.0.1:1/v1/chat/completions; auth none; price 1 2 cached=x; }
EOF
   'invalid parameter "cached=x" in "price" of llm_router_model "a": "cached=USD" or "cache_write=USD" expected, once each in nginx.conf:N',
   'nginx -t: a bad cached price';

$t->stop;
