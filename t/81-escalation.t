#!/usr/bin/perl
# Escalation: with llm_router_escalate on, the answer of a model that has
# an "escalate" target is held back, checked, and either released byte
# for byte or dropped for the escalate model's answer.  The client never
# sees the inadequate answer; the log record says which criterion fired
# and what each try cost.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use Encode ();
use LLMRouterTest qw(user bytes_is json_encode json_decode usd only content_of usage_of);

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('large', key => 'sk-large');
$t->mock('backup', key => 'sk-backup');

my %KEY = (mini => 'sk-mini', large => 'sk-large', backup => 'sk-backup');

# "blank": a provider (an nginx server of the same configuration) whose
# answer is whitespace only; a header cannot carry such a reply to the
# mock (nginx and the mock trim header values)
my $blank_port = LLMRouterTest::free_port();
my $dead_port = LLMRouterTest::free_port();
my %blank_usage = (prompt_tokens => 11, completion_tokens => 3, total_tokens => 14);
my $blank_answer = '{"id":"chatcmpl-blank","object":"chat.completion","created":1,"model":"blank-1",'
    . '"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":" \n\t \r\n "}}],'
    . '"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}';
(my $blank_conf = $blank_answer) =~ s/\\/\\\\/g;

$t->config(<<"EOF" . <<'EOF')->run;
llm_router_model blank  { url http://127.0.0.1:$blank_port/v1/chat/completions; model blank-1; auth none;
                          price 0.50 1.00; escalate large; }
llm_router_model deadend { url http://127.0.0.1:$dead_port/v1/chat/completions; model dead-1; auth none; }

server {
    listen 127.0.0.1:$blank_port;
    location / {
        default_type application/json;
        add_header X-Mock-Provider blank;
        return 200 '$blank_conf';
    }
}
EOF
llm_router_model mini   { url %%URL_mini%%;   model gpt-4o-mini; key sk-mini;   price 0.15 0.60;
                          escalate large; fallback large; }
llm_router_model large  { url %%URL_large%%;  model gpt-4o;      key sk-large;  price 2.50 10.00;
                          fallback backup; }
llm_router_model backup { url %%URL_backup%%; model backup-1;    key sk-backup; price 1.00 2.00; }
llm_router_model lone   { url %%URL_mini%%;   model gpt-4o-mini; key sk-mini;   price 0.15 0.60;
                          escalate large; }
llm_router_model kept   { url %%URL_mini%%;   model gpt-4o-mini; key sk-mini;   price 0.15 0.60;
                          escalate deadend; }

log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;

    llm_router_default mini;
    llm_router_pin blank lone kept;     # the tests pin them
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_connect_timeout 1s;
    proxy_read_timeout 3s;
    access_log %%PREFIX%%/llm.log llm;
    %%ROUTE_HEADERS%%

    # llm_router_escalate on alone: finish_reason and empty content
    location = /v1/chat/completions {
        llm_router on;
        llm_router_escalate on;
        proxy_pass $llm_router_url;
    }

    # every criterion
    location = /all {
        llm_router on;
        llm_router_escalate on;
        llm_router_escalate_min_length 20;
        llm_router_escalate_pattern "^I cannot" "not sure";
        llm_router_escalate_json on;
        llm_router_escalate_tool_args on;
        proxy_pass $llm_router_url;
    }

    # every criterion, but llm_router_escalate is off (the default)
    location = /off {
        llm_router on;
        llm_router_escalate_min_length 20;
        llm_router_escalate_pattern "^I cannot" "not sure";
        llm_router_escalate_json on;
        llm_router_escalate_tool_args on;
        llm_router_escalate_stream on;
        proxy_pass $llm_router_url;
    }

    # streams held too
    location = /stream {
        llm_router on;
        llm_router_escalate on;
        llm_router_escalate_stream on;
        llm_router_escalate_json on;
        llm_router_escalate_tool_args on;
        proxy_pass $llm_router_url;
    }

    # nginx's proxy defaults: HTTP/1.0, buffered
    location = /defaults {
        llm_router on;
        llm_router_escalate on;
        llm_router_escalate_stream on;
        proxy_http_version 1.0;
        proxy_buffering on;
        proxy_pass $llm_router_url;
    }

    # in a small buffer
    location = /small {
        llm_router on;
        llm_router_escalate on;
        llm_router_escalate_stream on;
        llm_router_escalate_buffer 1k;
        proxy_pass $llm_router_url;
    }
}
EOF

my @MOCKS = qw(mini large backup);

# price per token in pico-USD (the price is USD per million tokens)
my %PRICE = (mini => [150_000, 600_000], lone => [150_000, 600_000], large => [2_500_000, 10_000_000],
             backup => [1_000_000, 2_000_000], blank => [500_000, 1_000_000]);

sub sent_counts { return { map { $_ => scalar(() = $t->requests($_)) } @MOCKS } }

sub chunks_of {
    my ($r) = @_;
    return grep { ref $_ eq 'HASH' && ref $_->{choices} eq 'ARRAY' && @{ $_->{choices} } } @{ $r->{events} };
}

sub stream_text { return join '', map { $_->{choices}[0]{delta}{content} // '' } chunks_of($_[0]) }

sub stream_finish { my @f = grep { defined } map { $_->{choices}[0]{finish_reason} } chunks_of($_[0]); return "@f" }

# the log lines, raw: cost_usd is read as written, not as a float
sub log_lines { (my $text = $t->read_file('llm.log')) =~ s/[^\n]*\z//; return grep { length } split /\n/, $text }

# "escalated=true reason=length fallback=false | mini 200 length, large 200 -"
sub summary {
    my ($rec) = @_;
    return 'no record' unless ref $rec eq 'HASH' && !$rec->{_invalid};
    return sprintf 'escalated=%s reason=%s fallback=%s | %s',
        $rec->{escalated} ? 'true' : 'false', $rec->{escalation_reason} // 'null',
        $rec->{fallback} ? 'true' : 'false',
        join ', ', map { "$_->{model} $_->{status} " . ($_->{reason} // '-') } @{ $rec->{attempts} || [] };
}

# Send a chat request (%o as for $t->ask, plus text => ...) and describe
# the outcome: "STATUS PROVIDER MODEL/RULE, sent: mini=1 large=1" and, with
# log => 1, the summary of its log record.  Also returns the response, its
# log record (decoded) and its log line (raw).
sub outcome {
    my (%o) = @_;
    my $with_log = delete $o{log};
    my $logged = () = log_lines();
    my $before = sent_counts();
    my $t0 = time;
    my $r = $t->ask(delete $o{text} // 'hi', %o);
    $r->{elapsed} = time - $t0;
    my $rec = ($t->access_log_records('llm.log', $logged + 1))[$logged];
    my $line = (log_lines())[$logged];
    my $after = sent_counts();
    my $sent = join ' ', map { "$_=" . ($after->{$_} - $before->{$_}) }
                         grep { $after->{$_} != $before->{$_} } @MOCKS;
    my $route = join '/', map { $r->{headers}{"x-llm-$_"} // '-' } qw(model rule);
    my $desc = sprintf '%d %s %s, sent: %s', $r->{status}, $r->{headers}{'x-mock-provider'} // '-',
                       $route, $sent || 'none';
    $desc .= ' | ' . summary($rec) if $with_log;
    return ($desc, $r, $rec, $line);
}

# What a mock answers when asked directly with the body nginx last sent it
# (and these control headers): the reference for byte comparisons and for
# the usage of an answer the client never saw.
sub direct {
    my ($name, @headers) = @_;
    return $t->http(port => $t->mock_info($name)->{port}, method => 'POST', path => '/v1/chat/completions',
                    headers => ['Content-Type' => 'application/json', Authorization => "Bearer $KEY{$name}",
                                @headers],
                    body => $t->capture($name)->{body});
}

# the answer the client would have had without the module: the body the
# provider got, less the usage the module asked for
sub unasked {
    my ($name, @headers) = @_;
    (my $body = $t->capture($name)->{body}) =~ s/"stream_options":\{"include_usage":true\},//;
    return $t->http(port => $t->mock_info($name)->{port}, method => 'POST', path => '/v1/chat/completions',
                    headers => ['Content-Type' => 'application/json', Authorization => "Bearer $KEY{$name}",
                                @headers],
                    body => $body);
}

# an answer without what changes from one answer to the next
sub stable { my ($s) = @_; $s =~ s/"id":"chatcmpl-[\w-]+"/"id":"ID"/g; $s =~ s/"created":\d+/"created":0/g; return $s }


# pico-USD of an answer of $model with this usage, and as the log writes it
sub pico { my ($model, $u) = @_; return $u->{prompt_tokens} * $PRICE{$model}[0] + $u->{completion_tokens} * $PRICE{$model}[1] }

# the cost_usd values of a raw log line: the record's, then each try's
sub costs_of { my ($line) = @_; return [ ($line // '') =~ /"cost_usd":([^,}\]]+)/g ] }

my $says = sub { my ($who, $model) = @_; "[$who] $model says: I read 1 message; your last one had 1 word." };
my $says_mini = $says->('mini', 'gpt-4o-mini');
my $says_large = $says->('large', 'gpt-4o');

plan tests => 55;

# ------------------------------------------------------------ a good answer

my ($d, $r, $rec, $line) = outcome(log => 1);
is $d, '200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -',
   'good answer: the cheap model answers, alone, not escalated';
{
    my $ref = direct('mini');
    bytes_is stable($r->{body}), stable($ref->{body}),
             'good answer: the client has the mock\'s answer byte for byte (but its id and created)';
    is_deeply [@{ $r->{headers} }{qw(content-type content-length x-mock-provider)}, content_of($r)],
              ['application/json', length $ref->{body}, 'mini', $says_mini],
              'good answer: its Content-Type, Content-Length and content';
    my $cost = usd(pico(mini => $ref->{json}{usage}));
    is_deeply [costs_of($line), @$rec{qw(prompt_tokens completion_tokens usage_source)}],
              [[$cost, $cost], @{ $ref->{json}{usage} }{qw(prompt_tokens completion_tokens)}, 'response'],
              'good answer: its cost and usage in the log';
}

# ------------------------------------------------------------ finish_reason

($d, $r, $rec, $line) = outcome(log => 1, headers => only('mini', 'X-Mock-Finish' => 'length'));
is $d, '200 large large/default, sent: mini=1 large=1 | escalated=true reason=length fallback=false'
       . ' | mini 200 length, large 200 -',
   'finish_reason length: escalated to large';

subtest 'length: the held answer is invisible' => sub {
    plan tests => 8;
    is scalar(() = $r->{raw} =~ m{HTTP/1\.\d \d{3}}g), 1, 'one status line';
    is $r->{headers}{'x-mock-provider'}, 'large', 'X-Mock-Provider of large only';
    is $r->{headers}{'x-llm-upstream'}, 'gpt-4o', 'X-LLM-Upstream is large\'s';
    is content_of($r), $says_large, 'content of large';
    is_deeply [$r->{json}{model}, $r->{json}{choices}[0]{finish_reason}], ['gpt-4o', 'stop'],
              'model and finish_reason of large';
    is length($r->{body}), $r->{headers}{'content-length'}, 'Content-Length of large\'s answer';
    unlike $r->{raw}, qr/\[mini\]|gpt-4o-mini|"length"/, 'nothing of the held answer';
    like $t->error_log, qr/llm_router: the answer of model "mini" is escalated to "large": length/,
         'error.log names the model, its target and the criterion';
};

{
    my $body = $t->upstream_json('large');
    my $h = $t->capture('large')->{headers};
    is_deeply [$body->{model}, $body->{messages}, $h->{authorization}],
              ['gpt-4o', [user('hi')], ['Bearer sk-large']],
              'length: large got the request rewritten for it, with its own credential';

    my $mini = usage_of(direct('mini', 'X-Mock-Finish' => 'length'));
    my $large = usage_of($r);
    my ($cm, $cl) = (pico(mini => $mini), pico(large => $large));
    is_deeply [costs_of($line), @$rec{qw(prompt_tokens completion_tokens)}],
              [[usd($cm + $cl), usd($cm), usd($cl)], @$large{qw(prompt_tokens completion_tokens)}],
              'length: cost_usd is the sum of both tries (mini\'s held answer was billed), usage is large\'s';
    ok $cm > 0 && $cl > 0, 'length: both tries have a cost';
}

($d, $r, $rec) = outcome(log => 1, headers => only('mini', 'X-Mock-Finish' => 'content_filter'));
is_deeply [$d, content_of($r)],
          ['200 large large/default, sent: mini=1 large=1 | escalated=true reason=content_filter fallback=false'
           . ' | mini 200 content_filter, large 200 -', $says_large],
          'finish_reason content_filter: escalated';

# ------------------------------------------------------------ empty content

($d, $r, $rec) = outcome(log => 1, headers => only('mini', 'X-Mock-Reply' => ''));
is_deeply [$t->capture('mini')->{headers}{'x-mock-reply'}, $d, content_of($r)],
          [[''], '200 large large/default, sent: mini=1 large=1 | escalated=true reason=empty fallback=false'
                 . ' | mini 200 empty, large 200 -', $says_large],
          'empty content: escalated';

($d, $r, $rec, $line) = outcome(log => 1, model => 'blank');
is_deeply [$d, content_of($r)],
          ['200 large large/client, sent: large=1 | escalated=true reason=empty fallback=false'
           . ' | blank 200 empty, large 200 -', $says_large],
          'whitespace-only content (spaces, tab, CR, LF): escalated';
{
    my ($cb, $cl) = (pico(blank => \%blank_usage), pico(large => usage_of($r)));
    is_deeply costs_of($line), [usd($cb + $cl), usd($cb), usd($cl)], 'whitespace-only: the costs add up';
}

# ------------------------------------------------------------ only with their directive

my @not_checked = (
    ['a short reply',     'ok',                         [headers => only('mini', 'X-Mock-Reply' => 'ok')]],
    ['a refusal',         'I cannot help with that.',   [headers => only('mini', 'X-Mock-Reply' => 'I cannot help with that.')]],
    ['broken JSON in json mode', '{"answer": 42, "ok": tru',
     [fields => { response_format => { type => 'json_object' } },
      headers => only('mini', 'X-Mock-Reply' => '{"answer": 42, "ok": tru')]],
);
for my $c (@not_checked) {
    my ($name, $content, $req) = @$c;
    ($d, $r) = outcome(log => 1, @$req);
    is_deeply [$d, content_of($r)],
              ['200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -',
               $content],
              "llm_router_escalate on alone: $name passes";
}
($d, $r) = outcome(log => 1, headers => only('mini', 'X-Mock-Tool-Args' => '{"a":'));
is_deeply [$d, $r->{json}{choices}[0]{message}{tool_calls}[0]{function}{arguments}],
          ['200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -', '{"a":'],
          'llm_router_escalate on alone: broken tool arguments pass';

# ------------------------------------------------------------ every criterion

sub at_all {
    my ($reply, %o) = @_;
    my ($d, $r) = outcome(log => 1, path => '/all', %o,
                          headers => only('mini', 'X-Mock-Reply' => $reply, %{ $o{headers} || {} }));
    return $d =~ /^200 large large\/default, sent: mini=1 large=1 \| escalated=true reason=(\w+) fallback=false \| mini 200 \1, large 200 -$/
           && content_of($r) eq $says_large ? "escalated: $1"
         : $d eq '200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -'
           && (content_of($r) // '') eq Encode::decode('UTF-8', $reply) ? 'passed'
         : "$d: " . ($r->{body} // '');
}

my $json_object = { response_format => { type => 'json_object' } };
my $json_schema = { response_format => { type => 'json_schema',
                                         json_schema => { name => 'a', schema => { type => 'object' } } } };

is_deeply [map { at_all($_) } 'Too short.', "\xc3\xa9" x 19, "\xc3\xa9" x 20, 'Twenty characters...'],
          ['escalated: short', 'escalated: short', 'passed', 'passed'],
          'llm_router_escalate_min_length 20: characters (not bytes) are counted';

is_deeply [map { at_all($_) } 'I cannot help with that.', 'i CANNOT help you with that', 'Well, I am NOT SURE about that.',
                              'Surely I cannot be wrong here.'],
          ['escalated: pattern', 'escalated: pattern', 'escalated: pattern', 'passed'],
          'llm_router_escalate_pattern: either regex, case-insensitive, anchored where asked';

is_deeply [at_all('{"answer": 42, "ok": tru', fields => $json_object),
           at_all('{"answer": 42, "ok": tru', fields => $json_schema),
           at_all('{"answer": 42, "ok": true} {', fields => $json_object),
           at_all('{"answer": 42, "ok": true}', fields => $json_object),
           at_all('{"answer": 42, "ok": true}', fields => $json_schema),
           at_all('{"answer": 42, "ok": tru')],
          ['escalated: json', 'escalated: json', 'escalated: json', 'passed', 'passed', 'passed'],
          'llm_router_escalate_json: broken JSON escalates in json_object and json_schema mode only';

{
    my @got;
    for my $args ('{"a":', '{"a": 1} x', '{"a": 1}') {
        my ($d, $r) = outcome(log => 1, path => '/all', headers => only('mini', 'X-Mock-Tool-Args' => $args));
        push @got, $d =~ /\| escalated=true reason=(\w+)/ ? "escalated: $1"
                 : $d =~ /^200 mini .*escalated=false/
                   && $r->{json}{choices}[0]{message}{tool_calls}[0]{function}{arguments} eq $args
                   ? 'passed' : $d;
    }
    is_deeply \@got, ['escalated: tool_args', 'escalated: tool_args', 'passed'],
              'llm_router_escalate_tool_args: invalid arguments escalate, valid ones pass (min_length does not apply)';
}

# ------------------------------------------------------------ escalate off

{
    my @got;
    for my $req (['length', headers => only('mini', 'X-Mock-Finish' => 'length')],
                 ['content_filter', headers => only('mini', 'X-Mock-Finish' => 'content_filter')],
                 ['empty', headers => only('mini', 'X-Mock-Reply' => '')],
                 ['short', headers => only('mini', 'X-Mock-Reply' => 'ok')],
                 ['pattern', headers => only('mini', 'X-Mock-Reply' => 'I cannot help with that.')],
                 ['json', fields => $json_object, headers => only('mini', 'X-Mock-Reply' => '{"answer": 42, "ok": tru')],
                 ['tool_args', headers => only('mini', 'X-Mock-Tool-Args' => '{"a":')],
                 ['stream length', fields => { stream => JSON::PP::true },
                  headers => only('mini', 'X-Mock-Finish' => 'length')]) {
        my ($name, @o) = @$req;
        my ($d) = outcome(log => 1, path => '/off', @o);
        push @got, "$name: $d";
    }
    is_deeply \@got,
              [map { "$_: 200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -" }
                   'length', 'content_filter', 'empty', 'short', 'pattern', 'json', 'tool_args', 'stream length'],
              'llm_router_escalate off (the default): no criterion escalates';
}

# ------------------------------------------------------------ escalate without fallback

($d, $r) = outcome(log => 1, model => 'lone', headers => only('mini', 'X-Mock-Finish' => 'length'));
is_deeply [$d, content_of($r)],
          ['200 large large/client, sent: mini=1 large=1 | escalated=true reason=length fallback=false'
           . ' | lone 200 length, large 200 -', $says_large],
          'escalate without a fallback: escalated';

# every model the answer is escalated to fails: the cheap answer, held
# back, is still better than an error
($d, $r) = outcome(log => 1, model => 'kept', headers => only('mini', 'X-Mock-Finish' => 'length'));
is_deeply [$d, $r->{json}{choices}[0]{finish_reason}],
          ['200 mini kept/client, sent: mini=1 | escalated=true reason=length fallback=false'
           . ' | kept 200 length, deadend 502 upstream', 'length'],
          'escalated to a model that fails: the held cheap answer is sent';

($d, $r) = outcome(log => 1, model => 'lone', headers => only('mini', 'X-Mock-Status' => 500));
is_deeply [$d, $r->{json}{error}{message}],
          ['500 mini lone/client, sent: mini=1 | escalated=false reason=null fallback=false | lone 500 status',
           'mock error 500'],
          'escalate without a fallback: a 500 is the answer (errors fail over, they do not escalate)';

# ------------------------------------------------------------ escalation and failover

($d, $r, $rec, $line) = outcome(log => 1, model => 'blank', headers => only('large', 'X-Mock-Status' => 500));
is_deeply [$d, content_of($r)],
          ['200 backup backup/client, sent: large=1 backup=1 | escalated=true reason=empty fallback=true'
           . ' | blank 200 empty, large 500 status, backup 200 -',
           $says->('backup', 'backup-1')],
          'the escalate target fails with 500: its fallback answers';
{
    my ($cb, $cx) = (pico(blank => \%blank_usage), pico(backup => usage_of($r)));
    is_deeply costs_of($line), [usd($cb + $cx), usd($cb), '0', usd($cx)],
              'escalate, then fail over: the failed try costs nothing, the others add up';
}
unlike $r->{raw}, qr/mock error|gpt-4o"|\[large\]/, 'escalate, then fail over: nothing of the failed try';

($d, $r) = outcome(log => 1, headers => only('mini', 'X-Mock-Status' => 500));
is_deeply [$d, content_of($r)],
          ['200 large large/default, sent: mini=1 large=1 | escalated=false reason=null fallback=true'
           . ' | mini 500 status, large 200 -', $says_large],
          'the cheap model fails with 500: its fallback answers, no escalation';

($d, $r) = outcome(log => 1, headers => only('mini', 'X-Mock-Close' => 'before'));
is_deeply [$d, content_of($r)],
          ['200 large large/default, sent: mini=1 large=1 | escalated=false reason=null fallback=true'
           . ' | mini 502 upstream, large 200 -', $says_large],
          'the cheap model closes without an answer: its fallback answers, no escalation';

# a held answer cut short never reached the client: it is escalated
($d, $r) = outcome(log => 1, headers => only('mini', 'X-Mock-Close' => 'after'));
is_deeply [$d, content_of($r), length($r->{body}) == ($r->{headers}{'content-length'} // -1)],
          ['200 large large/default, sent: mini=1 large=1 | escalated=true reason=unreadable fallback=false'
           . ' | mini 200 unreadable, large 200 -', $says_large, 1],
          'a held answer cut after its header: escalated, the client has large\'s whole answer';

# ------------------------------------------------------------ streams

my $stream = { stream => JSON::PP::true };

($d, $r) = outcome(log => 1, fields => $stream,
                   headers => only('mini', 'X-Mock-Finish' => 'length', 'X-Mock-Event-Delay-Ms' => 50));
is_deeply [$d, stream_text($r), stream_finish($r), $r->{events}[-1]],
          ['200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -',
           $says_mini, 'length', '[DONE]'],
          'stream, llm_router_escalate_stream off: not held, passed through even with finish_reason length';
ok $r->{reads}[-1] >= 0.2, 'stream not held: it arrives as the provider sends it'
    or diag "reads at @{ $r->{reads} }";

($d, $r) = outcome(log => 1, path => '/stream', fields => $stream,
                   headers => only('mini', 'X-Mock-Event-Delay-Ms' => 50));
is $d, '200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -',
   'held stream, good: released';
{
    my $ref = unasked('mini', 'X-Mock-Event-Delay-Ms' => 0);
    bytes_is stable($r->{body}), stable($ref->{body}), 'held stream, good: byte for byte (but ids and created)';
    ok $r->{reads}[-1] < 0.15, 'held stream, good: it comes at once, after the check'
        or diag "reads at @{ $r->{reads} }";
}

($d, $r, $rec, $line) = outcome(log => 1, path => '/stream', fields => $stream,
                                headers => only('mini', 'X-Mock-Finish' => 'length'));
is $d, '200 large large/default, sent: mini=1 large=1 | escalated=true reason=length fallback=false'
       . ' | mini 200 length, large 200 -',
   'held stream, finish_reason length: escalated';
is_deeply [$r->{headers}{'content-type'}, stream_text($r), stream_finish($r), $r->{events}[-1],
           scalar(grep { $_ eq '[DONE]' } @{ $r->{events} }),
           scalar(grep { ref $_ eq 'HASH' && $_->{model} ne 'gpt-4o' } @{ $r->{events} }),
           scalar(grep { ref $_ eq 'HASH' && $_->{usage} } @{ $r->{events} }),
           scalar(grep { ref $_ eq 'HASH' && ($_->{choices}[0]{delta}{role} // '') eq 'assistant' } @{ $r->{events} })],
          ['text/event-stream', $says_large, 'stop', '[DONE]', 1, 0, 0, 1],
          'held stream, escalated: the client has one complete stream, all of it from large';
like $r->{raw}, qr/\r\n0\r\n\r\n\z/, 'held stream, escalated: the client\'s stream ends properly';
{
    my ($cm, $cl) = (pico(mini => usage_of(direct('mini', 'X-Mock-Finish' => 'length', 'X-Mock-Event-Delay-Ms' => 0))),
                     pico(large => usage_of(direct('large', 'X-Mock-Event-Delay-Ms' => 0))));
    is_deeply costs_of($line), [usd($cm + $cl), usd($cm), usd($cl)],
              'held stream, escalated: the costs of both streams add up';
}

my @stream_cases = (
    ['empty', { 'X-Mock-Reply' => '' }],
    ['broken JSON, json_object', { 'X-Mock-Reply' => '{"answer": 42, "ok": tru' }, $json_object],
    ['valid JSON in pieces, json_object', { 'X-Mock-Reply' => '{"answer": 42, "ok": true, "list": [1, 2, 3]}' },
     $json_object],
    ['broken tool arguments', { 'X-Mock-Tool-Args' => '{"city": "Paris", "days":' }],
    ['valid tool arguments in pieces', { 'X-Mock-Tool-Args' => '{"city": "Paris", "days": 3}' }],
);
{
    my @got;
    for my $c (@stream_cases) {
        my ($name, $h, $fields) = @$c;
        my ($d, $r) = outcome(log => 1, path => '/stream', fields => { %$stream, %{ $fields || {} } },
                              headers => only('mini', %$h));
        my $from = join ',', sort keys %{ { map { $_->{model} => 1 } grep { ref $_ eq 'HASH' } @{ $r->{events} } } };
        push @got, "$name: " . ($d =~ /^200 (\w+) .*\| escalated=(\w+) reason=(\w+)/ ? "$1 $2 $3 from $from" : $d);
    }
    is_deeply \@got,
              ['empty: large true empty from gpt-4o',
               'broken JSON, json_object: large true json from gpt-4o',
               'valid JSON in pieces, json_object: mini false null from gpt-4o-mini',
               'broken tool arguments: large true tool_args from gpt-4o',
               'valid tool arguments in pieces: mini false null from gpt-4o-mini'],
              'held streams: empty, JSON and tool arguments are checked across the deltas';
}

# larger than llm_router_escalate_buffer: released unchecked, whole
{
    ($d, $r) = outcome(log => 1, path => '/small',
                       headers => only('mini', 'X-Mock-Reply-Bytes' => 5000, 'X-Mock-Finish' => 'length'));
    is_deeply [$d, length(content_of($r) // ''), $r->{json}{choices}[0]{finish_reason},
               length $r->{body} == $r->{headers}{'content-length'}],
              ['200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -',
               5000, 'length', 1],
              'JSON larger than llm_router_escalate_buffer 1k, finish_reason length: passed through unchecked, whole';
    my $ref = direct('mini', 'X-Mock-Reply-Bytes' => 5000, 'X-Mock-Finish' => 'length');
    bytes_is stable($r->{body}), stable($ref->{body}), 'JSON larger than the buffer: byte for byte';

    ($d, $r) = outcome(log => 1, path => '/small', fields => $stream,
                       headers => only('mini', 'X-Mock-Reply-Bytes' => 5000, 'X-Mock-Finish' => 'length'));
    is_deeply [$d, length stream_text($r), stream_finish($r), $r->{events}[-1], $r->{raw} =~ /\r\n0\r\n\r\n\z/ ? 1 : 0],
              ['200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 -',
               5000, 'length', '[DONE]', 1],
              'stream larger than the buffer: passed through unchecked, whole';
    $ref = unasked('mini', 'X-Mock-Reply-Bytes' => 5000, 'X-Mock-Finish' => 'length', 'X-Mock-Event-Delay-Ms' => 0);
    bytes_is stable($r->{body}), stable($ref->{body}), 'stream larger than the buffer: byte for byte';
    like $t->error_log, qr/the answer of model "mini" is larger than llm_router_escalate_buffer, not checked/,
         'larger than the buffer: error.log says it was not checked';
}

# ------------------------------------------------------------ proxy defaults

{
    my @got;
    for my $req ([], [headers => only('mini', 'X-Mock-Finish' => 'length')],
                 [fields => $stream], [fields => $stream, headers => only('mini', 'X-Mock-Finish' => 'length')]) {
        my ($d, $r) = outcome(log => 1, path => '/defaults', @$req);
        my $ref = $r->{headers}{'x-mock-provider'} eq 'mini' ? unasked('mini', 'X-Mock-Event-Delay-Ms' => 0) : undef;
        push @got, join ' ', $d, content_of($r) // stream_text($r),
                   $ref ? (stable($ref->{body}) eq stable($r->{body}) ? 'byte for byte' : 'differs') : ();
    }
    is_deeply \@got,
              ["200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 - $says_mini byte for byte",
               "200 large large/default, sent: mini=1 large=1 | escalated=true reason=length fallback=false | mini 200 length, large 200 - $says_large",
               "200 mini mini/default, sent: mini=1 | escalated=false reason=null fallback=false | mini 200 - $says_mini byte for byte",
               "200 large large/default, sent: mini=1 large=1 | escalated=true reason=length fallback=false | mini 200 length, large 200 - $says_large"],
              'proxy_http_version 1.0, proxy_buffering on: held, released and escalated the same';
}

# ------------------------------------------------------------ keep-alive

{
    my $conn = $t->connect;
    my @got;
    for my $req ([],
                 [headers => only('mini', 'X-Mock-Finish' => 'length')],
                 [path => '/stream', fields => $stream, headers => only('mini', 'X-Mock-Finish' => 'length')],
                 [path => '/all', headers => only('mini', 'X-Mock-Reply' => 'I cannot help with that.')],
                 [model => 'blank', headers => only('large', 'X-Mock-Status' => 500)],
                 [path => '/stream', fields => $stream]) {
        my $r = $t->ask('hi', conn => $conn, @$req);
        push @got, join ' ', $r->{status}, $r->{headers}{'x-mock-provider'} // '-',
                             content_of($r) // stream_text($r);
    }
    close $conn;
    is_deeply \@got,
              ["200 mini $says_mini", "200 large $says_large", "200 large $says_large", "200 large $says_large",
               '200 backup ' . $says->('backup', 'backup-1'), "200 mini $says_mini"],
              'keep-alive: held, escalated and released answers in a row on one connection';
}

# ------------------------------------------------------------ configuration

my $c = LLMRouterTest->new;

sub conf_check { return $c->config_error(@_) }

my $m = sub { my ($name, %o) = @_;
              "llm_router_model $name { url http://127.0.0.1:1/v1; model $name-1; auth none;"
              . join('', map { " $_ $o{$_};" } sort keys %o) . ' }' };

is_deeply [conf_check($m->('a', escalate => 'b') . $m->('b', escalate => 'c') . $m->('c'), 'llm_router_escalate on;'),
           conf_check($m->('a', escalate => 'b', fallback => 'c') . $m->('b') . $m->('c'), 'llm_router_escalate on;')],
          ['passed', 'passed'], 'config: an escalate chain, escalate beside fallback';
like conf_check($m->('a', escalate => 'x') . $m->('b'), ''),
     qr/^unknown model "x" in "escalate" of llm_router_model "a"(?: in nginx\.conf:N)?$/,
     'config: escalate to an unknown model';
like conf_check($m->('a', escalate => 'a'), ''),
     qr/^the escalate targets of llm_router_model "a" come back to it(?: in nginx\.conf:N)?$/,
     'config: a model that escalates to itself';
like conf_check($m->('a', escalate => 'b') . $m->('b', escalate => 'c') . $m->('c', escalate => 'b'), ''),
     qr/^the escalate targets of llm_router_model "[bc]" come back to it(?: in nginx\.conf:N)?$/,
     'config: an escalate loop (b -> c -> b, behind a)';
is_deeply [conf_check($m->('a', escalate => 'b') . $m->('b'), 'llm_router_escalate_pattern "(";') =~ /^(\S+) failed: .*"\("/ ? 'regex error' : 'no regex error',
           conf_check($m->('a'), 'llm_router_escalate_pattern a; llm_router_escalate_pattern b;'),
           conf_check($m->('a'), 'llm_router_escalate_buffer lots;'),
           conf_check($m->('a'), 'llm_router_escalate_min_length -1;'),
           conf_check($m->('a'), 'llm_router_escalate maybe;'),
           conf_check($m->('a', escalate => 'b') . $m->('b'), 'llm_router_escalate on; llm_router_escalate_buffer 1k; llm_router_escalate_stream on;')],
          ['regex error',
           '"llm_router_escalate_pattern" directive is duplicate in nginx.conf:N',
           '"llm_router_escalate_buffer" directive invalid value in nginx.conf:N',
           '"llm_router_escalate_min_length" directive invalid number in nginx.conf:N',
           'invalid value "maybe" in "llm_router_escalate" directive, it must be "on" or "off" in nginx.conf:N',
           'passed'],
          'config: the escalate directives check their values';
is conf_check($m->('a', escalate => 'b') . "llm_router_model b { url http://127.0.0.1:1/v1; model b-1; auth none; escalate c; escalate c; }" . $m->('c'), ''),
   '"escalate" is duplicate in llm_router_model "b" in nginx.conf:N', 'config: escalate twice in a model';

$t->stop;
