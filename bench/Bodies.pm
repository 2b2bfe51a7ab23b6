# bench/Bodies.pm - the request bodies of the benchmark, which
# t/02-estimate.t reads too: a chat body of an exact size, a system and a
# user message of deterministic prose.

package Bodies;

use strict;
use warnings;

use Exporter qw(import);
use JSON::PP;

our @EXPORT_OK = qw(chat_body prose);

my $JSON = JSON::PP->new->canonical;

# Deterministic prose: no keyword of the rules, no code, so that a small
# body walks every rule down to the default.
my @WORDS = qw(
    the a an of to in on at for with by about after before during over
    under between through around near across this that these those our
    their its his her my your we they it he she you I there here then
    now soon later today tomorrow week month quarter year morning evening
    team crew driver warehouse truck route delivery parcel order customer
    supplier invoice schedule shift depot harbor city region north south
    east west coast valley road bridge station office meeting notes plan
    budget forecast weather rain snow wind traffic delay arrival
    departure stock shelf pallet box label scanner printer phone email
    call message report summary list item number price cost fee rate
    total share part half most some many few several each every all
    is was are were be been has had have will would can could should
    may might must need want asked said told noted agreed moved
    checked loaded sent received counted packed signed booked changed
    opened closed started finished waited stayed returned arrived left
    new old early late fast slow busy quiet long short large small full
    empty heavy light clean careful clear simple usual extra spare
    good better best fine ready late local main next last first second
    and but or so because while although since until unless also still
    just only even again already almost quite very really perhaps
);

sub lcg {
    my ($state) = @_;
    return sub { $$state = ($$state * 1103515245 + 12345) % 2147483648; $$state >> 8 };
}

sub prose {
    my ($bytes, $seed) = @_;
    my $rand = lcg(\$seed);
    my ($text, $sentences) = ('', 0);
    while (length $text < $bytes) {
        my $n = 8 + $rand->() % 13;
        my @w = map { $WORDS[$rand->() % @WORDS] } 1 .. $n;
        $w[$rand->() % $n] = (1 + $rand->() % 480) if $rand->() % 4 == 0;
        $w[$rand->() % ($n - 1)] .= ',' if $n > 10;
        $w[0] = ucfirst $w[0];
        $text .= join(' ', @w) . '.';
        $text .= ++$sentences % 6 ? ' ' : "\n\n";
    }
    return $text;
}

# A chat body of exactly $bytes bytes (JSON, compact, as SDKs send it).
sub chat_body {
    my ($bytes, $stream) = @_;
    my $head = { model => 'auto', temperature => 0.2, max_tokens => 512,
                 ($stream ? (stream => JSON::PP::true) : ()) };
    my $system = 'You are the assistant of a small delivery company. Answer '
               . 'in plain English, in short paragraphs, and keep numbers exact.';
    my $intro = "Here are my notes from this week. Please turn them into a "
              . "short summary for the team, five points at most.\n\n";
    my $make = sub {
        my ($user) = @_;
        my $b = $JSON->encode({ %$head, messages => [
                    { role => 'system', content => $system },
                    { role => 'user', content => $user } ] });
        return $b;
    };
    my $empty = length $make->($intro);
    my $user = $intro . prose($bytes - $empty + 64, 7);
    my $body = $make->($user);
    # trim the prose to the exact size (it is ASCII: a byte is a char)
    $user = substr $user, 0, length($user) - (length($body) - $bytes);
    $user =~ s/\s+\z//;
    $user .= '.' x ($bytes - length $make->($user));
    return $make->($user);
}


1;
