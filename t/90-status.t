#!/usr/bin/perl
# Metrics: the log phase counts every routed request in the llm_router_zone
# shared memory zone, and a location with llm_router_status answers them
# in the Prometheus text format (or as JSON with ?format=json).  After a
# known sequence of requests every counter has an exact value; a reload
# keeps them, a reload with a zone of another size starts a new, empty
# zone; without a zone the status location answers 503.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(route_of bytes_is usd only usage_of);

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('large', key => 'sk-large');
$t->mock('coder');

# prices, in pico-USD per token: USD per million tokens x 10^6
my %PRICE = (mini => [150_000, 600_000], large => [2_500_000, 10_000_000],
             coder => [1_000_000, 2_000_000]);

sub conf {
    my (%o) = @_;
    my $size = $o{size} // '1m';
    my $coder = $o{no_coder} ? ''
              : 'llm_router_model coder { url %%URL_coder%%; model coder-1; auth none; price 1 2; }';
    my $code_rule = $o{no_coder} ? '' : 'llm_router_rule code $http_x_tier=code coder;';
    my $conf = $o{conf} // 1;
    return <<"EOF";
llm_router_zone llm $size;
llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; fallback large; escalate large; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      key sk-large; price 2.50 10.00; }
$coder
llm_router_keywords hard "step by step";

server {
    listen 127.0.0.1:%%PORT%%;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    %%ROUTE_HEADERS%%
    add_header X-Conf $conf always;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_escalate on;
        llm_router_rule hard keywords=hard large;
        $code_rule
        llm_router_default mini;
        proxy_pass \$llm_router_url;
    }

    location = /metrics {
        llm_router_status;
    }
}
EOF
}

$t->config(conf())->run;

plan tests => 70;

# ------------------------------------------------------------ helpers

my $PROM_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

my @LATENCY_LE = (qw(0.100000 0.250000 0.500000 1.000000 2.500000 5.000000 10.000000
                     30.000000 60.000000 120.000000 300.000000), '+Inf');
my @DECISION_LE = (qw(0.000010 0.000025 0.000050 0.000100 0.000250 0.000500 0.001000
                      0.002500 0.005000 0.010000 0.100000), '+Inf');

# the families, in the order of the exposition
my @FAMILIES = (
    [llm_router_requests_total => 'counter'],
    [llm_router_fallbacks_total => 'counter'],
    [llm_router_escalations_total => 'counter'],
    [llm_router_upstream_errors_total => 'counter'],
    [llm_router_triage_total => 'counter'],
    [llm_router_shadow_total => 'counter'],
    [llm_router_prompt_tokens_total => 'counter'],
    [llm_router_completion_tokens_total => 'counter'],
    [llm_router_cost_usd_total => 'counter'],
    [llm_router_cooldown_seconds => 'gauge'],
    [llm_router_latency_seconds => 'histogram'],
    [llm_router_ttfb_seconds => 'histogram'],
    [llm_router_decision_seconds => 'histogram'],
);

sub scrape { my ($t, $args) = @_; return $t->http(path => '/metrics' . ($args // '')) }

# The exposition without the families of the alerts and budgets (rates,
# alert_firing, budget_*), which other tests check.
sub metrics_only {
    my ($text) = @_;
    return join '', map { "$_\n" }
                    grep { !/^(?:# (?:HELP|TYPE) )?llm_router_(?:rate|alert_firing|budget_\w+)\b/ }
                    split /\n/, $text;
}

# The samples of an exposition: [name, labels (as written), value], in order.
sub samples {
    my ($text) = @_;
    my @s;
    for (split /\n/, $text) {
        next if /^#/;
        my ($name, $labels, $value) = /^(\w+)(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})? (\S+)$/
            or do { push @s, ['_invalid', $_, '']; next };
        push @s, [$name, $labels // '', $value];
    }
    return @s;
}

# The samples of one metric: { 'labels' => value }; a label set seen twice
# shows as "DUPLICATE labels".
sub family {
    my ($text, $name) = @_;
    my %f;
    for (grep { $_->[0] eq $name } samples($text)) {
        my $key = exists $f{ $_->[1] } ? "DUPLICATE $_->[1]" : $_->[1];
        $f{$key} = $_->[2];
    }
    return \%f;
}

# A histogram of a model (or without a model): its buckets in order, checked
# to be cumulative and to end with +Inf equal to _count; returns the count,
# or a description of what is wrong.
sub histogram {
    my ($text, $name, $model, $les) = @_;
    my $sel = defined $model ? qq(model="$model",) : '';
    my @b = map { [$_->[1] =~ /le="([^"]*)"$/, $_->[2]] }
            grep { $_->[0] eq "${name}_bucket" && index($_->[1], $sel) == 0 } samples($text);
    my $count = family($text, "${name}_count")->{ defined $model ? qq(model="$model") : '' };
    my $sum = family($text, "${name}_sum")->{ defined $model ? qq(model="$model") : '' };
    return 'no _count' unless defined $count;
    return 'no _sum' unless defined $sum && $sum =~ /^\d+\.\d{6}$/;
    my @le = map { $_->[0] } @b;
    return "buckets: @le" unless "@le" eq "@$les";
    for my $i (1 .. $#b) {
        return "not cumulative at le=$b[$i][0]" if $b[$i][1] < $b[$i - 1][1];
    }
    return "+Inf is $b[-1][1], _count $count" unless $b[-1][1] == $count;
    return $count;
}


my %tokens;    # model => [prompt, completion], from the mocks' usage

sub bill {
    my ($model, $usage) = @_;
    $tokens{$model}[0] += $usage->{prompt_tokens};
    $tokens{$model}[1] += $usage->{completion_tokens};
}

sub cost_of {
    my ($model) = @_;
    my ($p, $c) = @{ $tokens{$model} };
    return usd($p * $PRICE{$model}[0] + $c * $PRICE{$model}[1]);
}


# ------------------------------------------------------------ the sequence

my @routes;
my $r;

# 1. the default
$r = $t->ask('hi');
push @routes, route_of($r);
bill(mini => usage_of($r));

# 2. a keyword rule
$r = $t->ask('Explain it step by step');
push @routes, route_of($r);
bill(large => usage_of($r));

# 3. a variable rule, to a model without fallback: no tries of its own
$r = $t->ask('hi', headers => { 'X-Tier' => 'code' });
push @routes, route_of($r);
bill(coder => usage_of($r));

# 4. the same, answering 503: it goes to the client
$r = $t->ask('hi', headers => { 'X-Tier' => 'code', 'X-Mock-Status' => 503 });
push @routes, route_of($r);

# 5. a 500 of mini: large answers
$r = $t->ask('hi', headers => only('mini', 'X-Mock-Status' => 500));
push @routes, route_of($r) . ' ' . $r->{headers}{'x-mock-provider'};
bill(large => usage_of($r));

# 6. mini's answer cut by max_tokens: escalated, large answers; mini's
# answer was billed all the same: its usage is what mini answers to the
# same body
$r = $t->ask('hi', headers => only('mini', 'X-Mock-Finish' => 'length'));
push @routes, route_of($r) . ' ' . $r->{headers}{'x-mock-provider'};
bill(large => usage_of($r));
my $held = $t->http(port => $t->mock_info('mini')->{port}, method => 'POST',
                    path => '/v1/chat/completions', body => $t->capture('mini')->{body},
                    headers => { 'Authorization' => 'Bearer sk-mini', 'Content-Type' => 'application/json',
                                 'X-Mock-Finish' => 'length' });
is_deeply [$held->{json}{choices}[0]{finish_reason}, ref usage_of($held)], ['length', 'HASH'],
          'the escalated answer of mini, asked again of the mock';
bill(mini => usage_of($held));

# 7. a stream (not held: llm_router_escalate_stream is off)
$r = $t->ask('hi', fields => { stream => JSON::PP::true, stream_options => { include_usage => JSON::PP::true } });
push @routes, route_of($r) . ' ' . $r->{headers}{'content-type'};
bill(mini => usage_of($r));

# 8. a 429 of mini, Retry-After: 1: large answers, mini cools down
$r = $t->ask('hi', headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 1));
my $t429 = time;
push @routes, route_of($r) . ' ' . $r->{headers}{'x-mock-provider'};
bill(large => usage_of($r));

# the cooldown gauge, while mini cools down
my $m = scrape($t);
my $j = scrape($t, '?format=json');
my $gauge = family($m->{body}, 'llm_router_cooldown_seconds');
my $cooling = $gauge->{'model="mini"'} // 'none';
ok $cooling =~ /^\d+\.\d{3}$/ && $cooling > 0 && $cooling <= 1,
   'llm_router_cooldown_seconds{model="mini"} > 0 and at most the Retry-After, 1 s, after the 429'
    or diag $cooling;
is_deeply [@$gauge{'model="large"', 'model="coder"'}], ['0.000', '0.000'],
          'llm_router_cooldown_seconds of the others: 0.000';
my $cms = $j->{json}{models}{mini}{cooldown_ms} // -1;
ok $cms > 0 && $cms <= 1000, 'JSON: models.mini.cooldown_ms > 0 and at most 1000' or diag $cms;

# 9. mini cooling down: skipped, large answers
$r = $t->ask('hi');
push @routes, route_of($r) . ' ' . $r->{headers}{'x-mock-provider'};
bill(large => usage_of($r));

is_deeply \@routes,
          ['mini/default', 'large/hard', 'coder/code', 'HTTP 503', 'large/default large',
           'large/default large', 'mini/default text/event-stream', 'large/default large',
           'large/default large'],
          'the sequence went where it should';

# after the Retry-After, the gauge is back to 0
my $wait = $t429 + 1.2 - time;
sleep $wait if $wait > 0;

# ------------------------------------------------------------ Prometheus

$m = scrape($t);
my $text = $m->{body};

is_deeply [$m->{status}, $m->{headers}{'content-type'}], [200, $PROM_TYPE],
          'GET /metrics: 200, Content-Type of the text format 0.0.4';
is $m->{headers}{'content-length'}, length $text, 'Content-Length';

is_deeply [grep { $_->[0] eq '_invalid' } samples($text)], [], 'every sample line parses';
is_deeply [map { [/^# TYPE (\S+) (\S+)$/] } grep { /^# TYPE / } split /\n/, metrics_only($text)],
          \@FAMILIES, '# TYPE lines: every family, in order, with its type';
is scalar(() = metrics_only($text) =~ /^# HELP llm_router_\w+ \S.*$/mg), scalar @FAMILIES, 'a # HELP line for each';

is_deeply family($text, 'llm_router_requests_total'),
          { 'model="mini",rule="default"' => 2, 'model="large",rule="hard"' => 1,
            'model="coder",rule="code"' => 2, 'model="large",rule="default"' => 4 },
          'llm_router_requests_total{model,rule}: the model that answered, the rule that routed';

is_deeply family($text, 'llm_router_fallbacks_total'),
          { 'from="mini",to="large",reason="status"' => 2,
            'from="mini",to="large",reason="cooldown"' => 1 },
          'llm_router_fallbacks_total{from,to,reason}: the 500 and the 429 (status), the skip (cooldown)';

is_deeply family($text, 'llm_router_escalations_total'),
          { 'from="mini",to="large",reason="length"' => 1 },
          'llm_router_escalations_total{from,to,reason}';

is_deeply family($text, 'llm_router_upstream_errors_total'),
          { 'model="mini",status="500"' => 1, 'model="mini",status="429"' => 1,
            'model="coder",status="503"' => 1 },
          'llm_router_upstream_errors_total{model,status}: tries and answers of 400 or more';

my %want_prompt = map {; qq(model="$_") => $tokens{$_}[0] } qw(mini large coder);
my %want_completion = map {; qq(model="$_") => $tokens{$_}[1] } qw(mini large coder);
my %want_cost = map {; qq(model="$_") => cost_of($_) } qw(mini large coder);

is_deeply family($text, 'llm_router_prompt_tokens_total'), \%want_prompt,
          'llm_router_prompt_tokens_total{model}: the sums of the mocks\' usage, the escalated answer too';
is_deeply family($text, 'llm_router_completion_tokens_total'), \%want_completion,
          'llm_router_completion_tokens_total{model}';
is_deeply family($text, 'llm_router_cost_usd_total'), \%want_cost,
          'llm_router_cost_usd_total{model}: exact decimals of the prices';
note "tokens: ", join ', ', map { "$_ $tokens{$_}[0]/$tokens{$_}[1] " . cost_of($_) } sort keys %tokens;

is_deeply family($text, 'llm_router_cooldown_seconds'),
          { map {; qq(model="$_") => '0.000' } qw(mini large coder) },
          'llm_router_cooldown_seconds{model}: 0.000 for all once the Retry-After has passed';

is_deeply { map {; $_ => histogram($text, 'llm_router_latency_seconds', $_, \@LATENCY_LE) } qw(mini large coder) },
          { mini => 2, large => 5, coder => 2 },
          'llm_router_latency_seconds{model}: buckets cumulative, +Inf = _count = requests answered';
is_deeply { map {; $_ => histogram($text, 'llm_router_ttfb_seconds', $_, \@LATENCY_LE) } qw(mini large coder) },
          { mini => 2, large => 5, coder => 2 },
          'llm_router_ttfb_seconds{model}: likewise';
is histogram($text, 'llm_router_decision_seconds', undef, \@DECISION_LE), 9,
   'llm_router_decision_seconds: buckets cumulative, +Inf = _count = every routed request';

# the latency sums are those of the JSON, in seconds
my %prom_ms = map { my $n = $_; map { ("$n $_" => sprintf '%.0f', 1000 * family($text, "${n}_sum")->{qq(model="$_")}) } qw(mini large coder) }
              qw(llm_router_latency_seconds llm_router_ttfb_seconds);

# ------------------------------------------------------------ JSON

$j = scrape($t, '?format=json');

is_deeply [$j->{status}, $j->{headers}{'content-type'}, ref $j->{json}], [200, 'application/json', 'HASH'],
          '?format=json: 200, application/json, an object';
is_deeply [sort grep { !/^budget/ } keys %{ $j->{json} }], [qw(escalations fallbacks models requests shadow triage upstream_errors)],
          'JSON: its keys (those of the budgets aside)';

sub rows { my ($list, @k) = @_; return [sort map { join ' ', map({ $_ // '-' } @$_{@k}), "= $_->{value}" } @$list] }

is_deeply rows($j->{json}{requests}, qw(model rule)),
          ['coder code = 2', 'large default = 4', 'large hard = 1', 'mini default = 2'], 'JSON: requests';
is_deeply rows($j->{json}{fallbacks}, qw(from to reason)),
          ['mini large cooldown = 1', 'mini large status = 2'], 'JSON: fallbacks';
is_deeply rows($j->{json}{escalations}, qw(from to reason)), ['mini large length = 1'], 'JSON: escalations';
is_deeply rows($j->{json}{upstream_errors}, qw(model status)),
          ['coder 503 = 1', 'mini 429 = 1', 'mini 500 = 1'], 'JSON: upstream_errors';

is_deeply { map { my $e = $j->{json}{models}{$_}; $_ => [@$e{qw(requests prompt_tokens completion_tokens cooldown_ms)}] } keys %{ $j->{json}{models} } },
          { map { $_ => [{ mini => 2, large => 5, coder => 2 }->{$_}, @{ $tokens{$_} }, 0] } qw(mini large coder) },
          'JSON: models.NAME: requests, prompt_tokens, completion_tokens, cooldown_ms';
is_deeply [map { $j->{body} =~ /"\Q$_\E":\{[^}]*"cost_usd":([^,}]*)/ ? $1 : 'none' } qw(mini large coder)],
          [map { cost_of($_) } qw(mini large coder)], 'JSON: models.NAME.cost_usd, the same decimals';
is_deeply { map { my $n = $_; my $f = $n =~ /ttfb/ ? 'ttfb_ms_sum' : 'latency_ms_sum'; map { ("$n $_" => $j->{json}{models}{$_}{$f}) } qw(mini large coder) }
            qw(llm_router_latency_seconds llm_router_ttfb_seconds) },
          \%prom_ms, 'JSON: latency_ms_sum and ttfb_ms_sum are the _sum of the histograms, in ms';
is_deeply [sort keys %{ $j->{json}{models}{mini} }],
          [qw(completion_tokens cooldown_ms cost_usd latency_ms_sum prompt_tokens requests ttfb_ms_sum)],
          'JSON: the fields of a model';
like $j->{body}, qr/\A\{"models":\{.*\}\n\z/s, 'JSON: one line';

# ------------------------------------------------------------ the location

my $head = $t->http(path => '/metrics', method => 'HEAD');
is_deeply [$head->{status}, $head->{headers}{'content-type'}, $head->{headers}{'content-length'}, $head->{body}],
          [200, $PROM_TYPE, length $text, ''], 'HEAD: the headers of GET, no body';
is_deeply [map { $t->http(path => '/metrics', method => $_, body => $_ eq 'POST' ? '{}' : undef)->{status} } qw(POST PUT DELETE)],
          [405, 405, 405], 'POST, PUT, DELETE: 405';
is_deeply [map { scrape($t, $_)->{headers}{'content-type'} } '?format=xml', '?format=JSON', '?x=1&format=json'],
          [$PROM_TYPE, $PROM_TYPE, 'application/json'], 'only format=json, exactly, gives JSON';

# scraping counts nothing
bytes_is metrics_only(scrape($t)->{body}), metrics_only($text), 'scraping changes no counter';

# ------------------------------------------------------------ reload

my $json = $j->{body};

ok $t->reload, 'reload (HUP), same configuration';
bytes_is metrics_only(scrape($t)->{body}), metrics_only($text), 'after the reload: the same exposition, byte for byte';
bytes_is scrape($t, '?format=json')->{body}, $json, 'after the reload: the same JSON';

$r = $t->ask('hi');
bill(mini => usage_of($r));
$text = scrape($t)->{body};
is_deeply [route_of($r), family($text, 'llm_router_requests_total')->{'model="mini",rule="default"'},
           family($text, 'llm_router_prompt_tokens_total')->{'model="mini"'},
           family($text, 'llm_router_cost_usd_total')->{'model="mini"'},
           histogram($text, 'llm_router_latency_seconds', 'mini', \@LATENCY_LE),
           histogram($text, 'llm_router_decision_seconds', undef, \@DECISION_LE)],
          ['mini/default', 3, $tokens{mini}[0], cost_of('mini'), 3, 10],
          'the new workers count on from there';

# a model the configuration no longer has keeps its entries and series
ok $t->reload(conf(no_coder => 1)), 'reload without the model "coder"';
$text = scrape($t)->{body};
is_deeply [family($text, 'llm_router_requests_total')->{'model="coder",rule="code"'},
           family($text, 'llm_router_upstream_errors_total')->{'model="coder",status="503"'},
           family($text, 'llm_router_prompt_tokens_total')->{'model="coder"'},
           histogram($text, 'llm_router_latency_seconds', 'coder', \@LATENCY_LE)],
          [2, 1, $tokens{coder}[0], 2], 'a removed model is still listed, with its counts';

# a reload with a zone of another size: nginx does as for its own zones
# (limit_req_zone, ...), the new configuration runs with a new zone, and
# what the old one held is gone: counters and cooldowns
$r = $t->ask('hi', headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 30));
$text = scrape($t)->{body};
is_deeply [route_of($r), family($text, 'llm_router_cooldown_seconds')->{'model="mini"'} > 25 ? 'cooling' : 'not'],
          ['large/default', 'cooling'], 'a 429 with Retry-After: 30: mini cools down';

my $master = $t->{nginx_pid};
ok $t->reload(conf(size => '2m', conf => 2)), 'reload with llm_router_zone llm 2m (was 1m)';
ok kill(0, $master), 'the master process still runs';
like scrape($t, '?format=json')->{body}, qr/\A\{"models":\{\},"requests":\[\],"fallbacks":\[\],"escalations":\[\],"upstream_errors":\[\][,}]/,
     'a zone of a new size starts empty: JSON';
$text = scrape($t)->{body};
is_deeply [(map { $_->[0] } grep { $_->[0] !~ /^llm_router_decision_seconds/ } samples(metrics_only($text))),
           histogram($text, 'llm_router_decision_seconds', undef, \@DECISION_LE)],
          [0], 'a zone of a new size starts empty: only the decision histogram, at 0';

$r = $t->ask('hi');
$text = scrape($t)->{body};
is_deeply [route_of($r), $r->{headers}{'x-conf'}, family($text, 'llm_router_requests_total')],
          ['mini/default', 2, { 'model="mini",rule="default"' => 1 }],
          'the new configuration answers; mini\'s cooldown is gone, counting starts again';

$t->stop;

# ------------------------------------------------------------ no zone

my $n = LLMRouterTest->new;
$n->mock('mini', key => 'sk-mini');
$n->config(<<'EOF')->run;
llm_router_model mini { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }
server {
    listen 127.0.0.1:%%PORT%%;
    location = /v1/chat/completions { llm_router on; llm_router_default mini; proxy_pass $llm_router_url; }
    location = /metrics { llm_router_status; }
}
EOF
my $before = length $n->error_log;
is_deeply [$n->ask('hi')->{status}, scrape($n)->{status}, scrape($n, '?format=json')->{status}],
          [200, 503, 503], 'without llm_router_zone: the router routes, llm_router_status answers 503';
like substr($n->error_log, $before), qr/\[error\] \d+#\d+: \*\d+ llm_router_status needs "llm_router_zone", client: /,
     'error.log: llm_router_status needs "llm_router_zone"';
$n->stop;

# ------------------------------------------------------------ labels

# names come from the configuration, where they may hold any byte: the
# label values are escaped, \ " and line feed in the text format, as JSON
# strings in JSON
my $weird = 'q"u\\o' . "\n";
my $long_a = 'x' x 62 . 'A';
my $long_b = 'x' x 62 . 'B';

my $w = LLMRouterTest->new;
$w->mock('mini', key => 'sk-mini');
$w->mock('large', key => 'sk-large');
$w->config(<<"EOF")->run;
llm_router_zone llm 1m;
llm_router_model "q\\"u\\\\o\\n" { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }
llm_router_model $long_a { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }
llm_router_model $long_b { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }
llm_router_model free   { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini; escalate big; }
llm_router_model big    { url %%URL_large%%; model gpt-4o;      key sk-large; }

server {
    listen 127.0.0.1:%%PORT%%;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        llm_router_escalate on;
        llm_router_rule "r\\"1\\\\" \$http_x_r=1 "q\\"u\\\\o\\n";
        llm_router_default "q\\"u\\\\o\\n";
        llm_router_pin $long_a $long_b free;     # the tests pin them
        proxy_pass \$llm_router_url;
    }

    location = /explain {
        llm_router_explain;
        llm_router_default "q\\"u\\\\o\\n";
    }

    location = /metrics {
        llm_router_status;
    }
}
EOF

is $w->ask('hi', headers => { 'X-R' => 1 })->{status}, 200, 'a request routed by the rule r"1\\ to the model q"u\\o\\n';
$text = scrape($w)->{body};
is_deeply [grep { /^llm_router_(?:requests|prompt_tokens)_total\{/ } split /\n/, $text],
          ['llm_router_requests_total{model="q\\"u\\\\o\\n",rule="r\\"1\\\\"} 1',
           'llm_router_prompt_tokens_total{model="q\\"u\\\\o\\n"} 7'],
          'text format: \\ " and line feed of label values escaped';
$j = scrape($w, '?format=json');
is_deeply [[keys %{ $j->{json}{models} }], $j->{json}{requests}],
          [[$weird], [{ model => $weird, rule => 'r"1\\', value => 1 }]],
          'JSON: the same names, as JSON strings';

# known problems, asserted as they should be
{
    $w->ask('hi', path => '/explain');
    $text = scrape($w)->{body};
    is_deeply [family($text, 'llm_router_requests_total')->{'model="q\\"u\\\\o\\n",rule="default"'},
               histogram($text, 'llm_router_decision_seconds', undef, \@DECISION_LE)],
              [undef, 1], 'llm_router_explain: nothing forwarded, nothing counted';
}

{
    $w->ask('hi', model => $long_a);
    $w->ask('hi', model => $long_b);
    $text = scrape($w)->{body};
    is_deeply [grep { /DUPLICATE/ } map { keys %{ family($text, $_) } } qw(llm_router_requests_total llm_router_prompt_tokens_total)],
              [], 'models whose names differ at the 63rd byte: series of their own';
}

{
    my $r = $w->ask('hi', model => 'free', headers => only('mini', 'X-Mock-Finish' => 'length'));
    $text = scrape($w)->{body};
    is_deeply [route_of($r), family($text, 'llm_router_escalations_total'),
               family($text, 'llm_router_prompt_tokens_total')->{'model="free"'},
               family($text, 'llm_router_completion_tokens_total')->{'model="free"'}],
              ['big/client', { 'from="free",to="big",reason="length"' => 1 }, 7, 17],
              'the escalated answer of "free" (price 0 0): its 7 + 17 tokens';
}

$w->stop;

# ------------------------------------------------------------ a full table

# 128 models: the 129th gets no entry: its requests by rule are counted
# (another table, of 512 series), its tokens, cost, latency and cooldown
# are not
my $f = LLMRouterTest->new;
$f->mock('mini', key => 'sk-mini');
my $pins = join ' ', 'last', map { "m$_" } 1 .. 129;
$f->config(join('', map { "llm_router_model m$_ { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; price 1 1; }\n" } 1 .. 129)
           . (<<'EOF' =~ s/%%PINS%%/$pins/r))->run;
llm_router_zone llm 1m;
llm_router_model last { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; fallback m1; }
server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%
    location = /v1/chat/completions { llm_router on; llm_router_default m1; llm_router_pin %%PINS%%; proxy_pass $llm_router_url; }
    location = /metrics { llm_router_status; }
}
EOF

my @status = map { $f->ask('hi', model => "m$_")->{status} } 1 .. 129;
$text = scrape($f)->{body};
is_deeply [(grep { $_ != 200 } @status),
           scalar keys %{ family($text, 'llm_router_requests_total') },
           scalar keys %{ family($text, 'llm_router_prompt_tokens_total') },
           family($text, 'llm_router_requests_total')->{'model="m129",rule="client"'},
           family($text, 'llm_router_prompt_tokens_total')->{'model="m129"'},
           family($text, 'llm_router_prompt_tokens_total')->{'model="m128"'}],
          [129, 128, 1, undef, 7],
          '129 models: 129 request series, 128 models with tokens; the 129th is not among them';

# "last" has no entry either: its 429 puts it in no cooldown
my @last = map { route_of($f->ask('hi', model => 'last', headers => $_)) }
           { 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 30 }, {};
is_deeply \@last, ['HTTP 429', 'last/client'], 'a model without an entry does not cool down';
$f->stop;

# ------------------------------------------------------------ hash collisions

# the CRC32 of these names differ in their last bit only: the same hash
# in the zone's tables, yet each model has its entry and its series
my @twins = qw(zcicetrztt klaymoqwfs);
my $h = LLMRouterTest->new;
$h->mock('mini', key => 'sk-mini');
$h->config(join('', map { "llm_router_model $_ { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }\n" } @twins)
           . <<'EOF2')->run;
llm_router_zone llm 1m;
server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%
    location = /v1/chat/completions { llm_router on; llm_router_default zcicetrztt; llm_router_pin klaymoqwfs; proxy_pass $llm_router_url; }
    location = /metrics { llm_router_status; }
}
EOF2
$h->ask('hi', model => $twins[0]);
$h->ask('hi', model => $twins[1]) for 1 .. 2;
$text = scrape($h)->{body};
is_deeply [map { family($text, 'llm_router_requests_total')->{qq(model="$_",rule="client")},
                 family($text, 'llm_router_prompt_tokens_total')->{qq(model="$_")} } @twins],
          [1, 7, 2, 14], 'two models of the same hash: entries and series of their own';
$h->stop;

# ------------------------------------------------------------ configuration

my $c = LLMRouterTest->new;
my $model = sub { "llm_router_model $_[0] { url http://127.0.0.1:1/v1; model m; auth none; }" };
my $n64 = 'n' x 64;

like $c->config_error($model->('a') . $model->($n64), ''),
     qr/^name "$n64" is longer than 63 bytes in nginx\.conf:N$/,
     'config: a model name longer than a label';
is $c->config_error($model->('a') . $model->('n' x 63), ''), 'passed',
   'config: a model name of 63 bytes';
like $c->config_error($model->('a'), "llm_router_rule $n64 code a;"),
     qr/^name "$n64" is longer than 63 bytes in nginx\.conf:N$/,
     'config: a rule name longer than a label';
like $c->config_error('llm_router_zone llm 1m; ' . $model->('a')
                      . " llm_router_budget $n64 key=\$remote_addr limit=1 "
                      . 'period=day action=reject;', ''),
     qr/^name "$n64" is longer than 63 bytes in nginx\.conf:N$/,
     'config: a budget name longer than a label';

my ($ok, $out) = $c->config(<<'EOF2')->nginx_test;
llm_router_zone llm 1m;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /metrics { llm_router_status; proxy_pass http://127.0.0.1:1; }
}
EOF2
like $out, qr/\[emerg\].*"llm_router_status" and another content handler such as "proxy_pass" are in the same location "\/metrics"/,
     'config: llm_router_status and proxy_pass in one location';
ok !$ok, 'config: nginx -t fails on it';
