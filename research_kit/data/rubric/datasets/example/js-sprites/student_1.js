var player = createSprite(200, 350);
player.setAnimation("basket");
player.scale = 0.5;
var star = createSprite(randomNumber(50, 350), 0);
star.setAnimation("star");
star.scale = 0.3;
var score = 0;

function draw() {
  background("midnightblue");
  if (keyDown("left")) {
    player.x = player.x - 5;
  }
  if (keyDown("right")) {
    player.x = player.x + 5;
  }
  star.velocityY = star.velocityY + 0.1;
  star.rotation = star.rotation + 3;
  if (player.isTouching(star)) {
    score = score + 1;
    star.y = 0;
  }
  drawSprites();
  text("Score: " + score, 10, 20);
}
